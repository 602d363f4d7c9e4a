// Keyboard shortcuts: 1..6 pick on the preference scale, Ctrl+Enter sends the turn, Alt+E ends the conversation.
document.addEventListener("keydown", function (ev) {
  var typing = ev.target && (ev.target.tagName === "TEXTAREA" || ev.target.tagName === "INPUT");
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
    var form = document.getElementById("turn-form");
    if (form) { ev.preventDefault(); form.requestSubmit(); }
    return;
  }
  if (ev.altKey && (ev.key === "e" || ev.key === "E")) {
    var end = document.getElementById("end");
    if (end) { ev.preventDefault(); end.click(); }
    return;
  }
  if (typing || ev.ctrlKey || ev.altKey || ev.metaKey) return;
  var button = document.querySelector('#scale button[data-key="' + ev.key + '"]');
  if (button) { ev.preventDefault(); button.click(); }
});
