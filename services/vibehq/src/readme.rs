//! What `vibehq ai readme` sends the model: a worker folder's source and config files, read
//! within a budget, and the instructions for the README it should write.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Most bytes of one file sent; a longer one is cut (and says so).
const PER_FILE: usize = 16 * 1024;
/// Most bytes sent in all; files beyond it are named but not sent.
const IN_ALL: usize = 96 * 1024;
/// Most files looked at.
const MAX_FILES: usize = 500;

/// The README's instructions.
pub const SYSTEM: &str = "You write README.md files for workers of a vibehq fleet (a control \
    plane that hands tasks to workers and containers). Write GitHub Markdown only, no preamble \
    and no code fence around the whole answer. Start with a level-1 heading naming the worker, \
    then: what it does (the task types and commands it handles), how to configure it (every \
    setting and environment variable the code reads), how to build, run and test it (the \
    exact commands), and how it reports to vibehq (health, heartbeats, AI calls) if it does. \
    Say only what the files show; do not invent features.";

/// The files of a folder worth describing.
#[derive(Debug)]
pub struct Folder {
    pub name: String,
    /// Path relative to the folder, and contents (possibly cut).
    pub files: Vec<(String, String)>,
    /// Files past the budget: named to the model, not sent.
    pub left_out: Vec<String>,
}

impl Folder {
    pub fn read(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            bail!("{} is not a folder", root.display());
        }
        let mut paths = Vec::new();
        walk(root, root, &mut paths)?;
        paths.sort();
        let mut folder = Folder {
            name: root
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "worker".into()),
            files: Vec::new(),
            left_out: Vec::new(),
        };
        let mut used = 0;
        for path in paths {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue; // not text
            };
            if used >= IN_ALL {
                folder.left_out.push(relative);
                continue;
            }
            let room = PER_FILE.min(IN_ALL - used);
            let text = if text.len() > room {
                let cut = (0..=room)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                format!(
                    "{}\n[… {} more bytes not shown]",
                    &text[..cut],
                    text.len() - cut
                )
            } else {
                text
            };
            used += text.len();
            folder.files.push((relative, text));
        }
        if folder.files.is_empty() {
            bail!(
                "{} has no source or config files to describe (Rust, Python, TypeScript, JavaScript, TOML, JSON, YAML, shell, Dockerfile)",
                root.display()
            );
        }
        Ok(folder)
    }

    pub fn bytes(&self) -> usize {
        self.files.iter().map(|(_, text)| text.len()).sum()
    }

    /// The user prompt: the files, each under its path.
    pub fn prompt(&self) -> String {
        let mut prompt = format!(
            "Write the README.md of the worker in folder `{}`. Its files:\n",
            self.name
        );
        for (path, text) in &self.files {
            prompt.push_str(&format!("\n--- {path} ---\n{text}\n"));
        }
        if !self.left_out.is_empty() {
            prompt.push_str(&format!(
                "\nAlso in the folder (not shown): {}\n",
                self.left_out.join(", ")
            ));
        }
        prompt
    }
}

/// Files under `dir` worth describing, skipping build output, dependencies and dot folders.
fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries.flatten() {
        if found.len() >= MAX_FILES {
            return Ok(());
        }
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | "node_modules" | "dist" | "__pycache__"
            ) {
                walk(root, &path, found)?;
            }
            continue;
        }
        let described = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "py" | "ts" | "js" | "mjs" | "toml" | "json" | "yaml" | "yml" | "sh")
        ) || name == "Dockerfile";
        let is_own_readme = path.parent() == Some(root) && name.eq_ignore_ascii_case("README.md");
        if described && !is_own_readme && name != "package-lock.json" && name != "Cargo.lock" {
            found.push(path);
        }
    }
    Ok(())
}

/// The answer without a code fence around the whole of it (models add one despite being told).
pub fn unfence(text: &str) -> &str {
    let trimmed = text.trim();
    trimmed
        .strip_prefix("```markdown")
        .or_else(|| trimmed.strip_prefix("```md"))
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .map_or(trimmed, str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_read_without_build_output_and_within_its_budget() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        std::fs::write(
            root.join("Cargo.toml"),
            "[package]\nname = \"acme-fixer\"\n",
        )
        .expect("write");
        std::fs::create_dir_all(root.join("src")).expect("dir");
        std::fs::write(root.join("src/main.rs"), "x".repeat(20_000)).expect("write");
        std::fs::create_dir_all(root.join("target/debug")).expect("dir");
        std::fs::write(root.join("target/debug/build.rs"), "fn main() {}").expect("write");
        std::fs::write(root.join("README.md"), "old").expect("write");
        std::fs::write(root.join("logo.png"), [0u8, 159, 146, 150]).expect("write");
        let folder = Folder::read(root).expect("read");
        let paths: Vec<&str> = folder.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["Cargo.toml", "src/main.rs"]);
        assert!(folder.files[1].1.contains("more bytes not shown"));
        assert!(folder.prompt().contains("--- Cargo.toml ---"));
        assert_eq!(unfence("```markdown\n# A\n```"), "# A");
        assert_eq!(unfence("# A"), "# A");
    }
}
