// A small Server-Sent Events parser for fetch() streams: EventSource cannot POST, and
// POST /chat {stream: true} is how the page gets its answer token by token.
// kbSseParser(onEvent) returns {push(text), end()}; onEvent(eventName, data) is called once
// per complete event. Chunks may split anywhere (inside a line, between CR and LF).
"use strict";

window.kbSseParser = function kbSseParser(onEvent) {
  let buffer = "";

  function dispatch(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // ":" lines are comments (keep-alives)
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) onEvent(event, data.join("\n"));
  }

  return {
    push(text) {
      buffer += text;
      const held = buffer.endsWith("\r") ? "\r" : ""; // its LF may be the next chunk's first byte
      buffer = buffer.slice(0, buffer.length - held.length).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
      buffer += held;
    },
    end() {
      if (buffer.trim()) dispatch(buffer.replace(/\r\n?/g, "\n"));
      buffer = "";
    },
  };
};
