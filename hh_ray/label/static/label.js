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

// Streamed turns: the two answers appear as the engine writes them (server-sent events over fetch); once the
// pair is stored the page reloads to show it with the scale. Without fetch streams the form posts as before.
(function () {
  var form = document.getElementById("turn-form");
  if (!form || !form.dataset.stream || !window.fetch || !window.TextDecoder || !window.ReadableStream) return;
  var panel = document.getElementById("streaming"), failure = document.getElementById("stream-error");
  var texts = { a: panel.querySelector("#stream-a .text"), b: panel.querySelector("#stream-b .text") };
  var chunks = 0;

  function onEvent(name, data) {
    if (name === "text") {
      chunks += 1;
      texts.a.textContent = data.response_a;  // text, never markup
      texts.b.textContent = data.response_b;
    } else if (name === "task") {
      sessionStorage.setItem("hh-ray-stream", JSON.stringify({
        task_id: data.task_id, chunks: chunks, shown_a: texts.a.textContent, shown_b: texts.b.textContent}));
      window.location.assign(window.location.pathname);
    } else if (name === "error") {
      failure.textContent = data.error;
      failure.hidden = false;
      form.querySelector("#send").disabled = false;
    }
  }

  function parse(block) {  // one event: "event: NAME" and "data: JSON" lines
    var name = null, data = null;
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event: ") === 0) name = line.slice(7);
      else if (line.indexOf("data: ") === 0) data = JSON.parse(line.slice(6));
    });
    if (name && data) onEvent(name, data);
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var token = form.querySelector('input[name="csrf_token"]').value;
    var text = form.querySelector("#turn-text").value;
    form.querySelector("#send").disabled = true;
    failure.hidden = true;
    texts.a.textContent = texts.b.textContent = "";
    panel.hidden = false;
    chunks = 0;
    fetch(form.dataset.stream, {method: "POST", credentials: "same-origin",
                                headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
                                body: JSON.stringify({text: text})}).then(function (response) {
      if (!response.ok || !response.body) { form.submit(); return; }  // the page post shows the error, draft kept
      var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
      function pump() {
        return reader.read().then(function (step) {
          if (step.done) return;
          buffer += decoder.decode(step.value, {stream: true});
          var end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            parse(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
          return pump();
        });
      }
      return pump();
    }).catch(function () { form.submit(); });
  });
})();
