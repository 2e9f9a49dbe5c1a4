// Runs before the first paint (a classic script in <head>): sets the theme, so a dark page
// never flashes light. The operator's choice (kept by the toggle) wins; without one, the
// system's preference, followed as it changes. The stylesheet has one palette per
// `data-theme`, so the system's preference is read here only.
(() => {
  const system = matchMedia("(prefers-color-scheme: dark)");
  const chosen = () => {
    try {
      const theme = localStorage.getItem("vibehq.theme");
      return theme === "light" || theme === "dark" ? theme : null;
    } catch {
      return null; // Storage may be off; the system's preference still applies.
    }
  };
  const apply = () => {
    document.documentElement.dataset.theme = chosen() || (system.matches ? "dark" : "light");
  };
  apply();
  system.addEventListener("change", () => chosen() || apply());
})();
