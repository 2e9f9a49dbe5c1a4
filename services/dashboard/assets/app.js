document.getElementById("app").textContent = "vibehq";
