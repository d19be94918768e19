// Keyboard rating: Y / 1 = present, N / 2 = absent, U / 3 = toggle "adult content". One submit per page:
// the server ignores a second vote anyway, this only spares the round trip.
const form = document.getElementById("vote");
let sent = false;
form.addEventListener("submit", (e) => { if (sent) { e.preventDefault(); } sent = true; });
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || sent) return;
  const k = e.key.toLowerCase();
  if (k === "y" || k === "1") { e.preventDefault(); document.getElementById("yes").click(); }
  else if (k === "n" || k === "2") { e.preventDefault(); document.getElementById("no").click(); }
  else if (k === "u" || k === "3") { e.preventDefault(); const u = document.getElementById("unsafe"); u.checked = !u.checked; }
});
