// Runs before the first paint (a classic script in <head>): applies the theme the operator
// chose, if any, so a dark page never flashes light. Without a choice, the stylesheet follows
// prefers-color-scheme.
try {
  const chosen = localStorage.getItem("vibehq.theme");
  if (chosen === "light" || chosen === "dark") document.documentElement.dataset.theme = chosen;
} catch {
  // Storage may be off; the system's preference still applies.
}
