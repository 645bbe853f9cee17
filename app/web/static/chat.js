// kb chat page: ask, read the streamed answer, open the passages it cites.
// Talks to GET /collections and POST /chat {stream: true} with the key kept in localStorage.
// Document text is untrusted: it only ever reaches the page as text nodes (never innerHTML).
"use strict";

(() => {
  const KEY_STORAGE = "kb.apiKey";
  const COLLECTION_STORAGE = "kb.collection";
  const MARKER = /\[(\d{1,3})\]/g;
  const $ = (id) => document.getElementById(id);
  const state = { conversationId: null, controller: null, signedIn: false };

  // ---- small DOM helpers -------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function storage(key, value) {
    try {
      if (value === undefined) return localStorage.getItem(key) || "";
      if (value) localStorage.setItem(key, value);
      else localStorage.removeItem(key);
    } catch (_) { /* storage disabled: the key lives in the field only */ }
    return value || "";
  }

  function apiKey() { return storage(KEY_STORAGE) || $("api-key").value.trim(); }

  // Signed in with the company account: the session cookie (HttpOnly, never seen here) authenticates.
  function headers(extra) {
    const key = state.signedIn ? "" : apiKey();
    return Object.assign(key ? { Authorization: "Bearer " + key } : {}, extra || {});
  }

  function notice(message) {
    $("notice").textContent = message || "";
    $("notice").hidden = !message;
  }

  function keyState(message, kind) {
    $("key-state").textContent = message;
    $("key-state").className = "hint " + (kind || "");
  }

  // ---- errors: every failure becomes one readable sentence ---------------------------
  async function readError(res) {
    let code = "", message = "", requestId = "";
    try {
      const body = await res.json();
      if (body && body.error) ({ code = "", message = "", request_id: requestId = "" } = body.error);
    } catch (_) { /* not JSON: use the status below */ }
    return describeError(res.status, code, message, requestId, res.headers.get("Retry-After"));
  }

  function describeError(status, code, message, requestId, retryAfter) {
    let text;
    if (status === 401) {
      if (state.signedIn) { // the session expired or was revoked: offer the sign-in again
        text = "Your sign-in has ended: sign in again.";
        state.signedIn = false;
        $("sign-in").hidden = false;
        $("signed-in").hidden = true;
        $("key-form").hidden = false;
      } else if (apiKey()) {
        text = "Enter a valid API key: the server refused this one.";
        keyState("This key was refused.", "bad");
      } else {
        text = "Enter a valid API key to ask questions (paste it in the field above).";
      }
    } else if (status === 403) {
      text = message || "Your key may not read this collection.";
    } else if (status === 429) {
      text = "Too many questions at once: wait " + (retryAfter || "a few") + " s and try again.";
    } else {
      text = message || (status ? "The server could not answer (HTTP " + status + ")." : "The server could not answer.");
    }
    return { status, code, text, requestId };
  }

  // ---- single sign-on: offered when the server has an identity provider ---------------
  async function loadAccount() {
    let config;
    try {
      const res = await fetch("/auth/config");
      config = res.ok ? await res.json() : { sso: false };
    } catch (_) {
      return;
    }
    $("sso").hidden = !config.sso;
    if (!config.sso) return;
    const res = await fetch("/auth/me", { credentials: "same-origin" });
    const me = res.ok ? await res.json() : null;
    state.signedIn = Boolean(me && me.via === "session");
    $("sign-in").hidden = state.signedIn;
    $("signed-in").hidden = !state.signedIn;
    $("key-form").hidden = state.signedIn;
    if (state.signedIn) $("user-name").textContent = "Signed in as " + me.name.replace(/ \(sso:[^)]*\)$/, "");
    else if (res.status === 403) notice((await readError(res)).text);
  }

  async function signOut() {
    try {
      await fetch("/auth/logout", { method: "POST", credentials: "same-origin" });
    } finally {
      window.location.assign("/");
    }
  }

  // ---- collections -------------------------------------------------------------------
  async function loadCollections() {
    const select = $("collection");
    let res;
    try {
      res = await fetch("/collections", { headers: headers() });
    } catch (_) {
      notice("The server cannot be reached.");
      return;
    }
    if (!res.ok) select.replaceChildren(new Option("All my collections", "")); // none readable with this key
    if (res.status === 401 && !apiKey()) { // first visit: ask for the key, no alarm
      notice("");
      keyState($("sso").hidden ? "Paste your API key to start; it is kept in this browser only."
        : "Sign in with your company account, or paste an API key (kept in this browser only).", "");
      $("api-key").focus();
      return;
    }
    if (!res.ok) {
      notice((await readError(res)).text);
      return;
    }
    notice("");
    if (apiKey()) keyState("Key accepted; kept in this browser only.", "ok");
    const wanted = select.value || storage(COLLECTION_STORAGE);
    select.replaceChildren(new Option("All my collections", ""));
    for (const c of await res.json()) {
      select.append(new Option(c.name + " (" + c.chunks + (c.chunks === 1 ? " passage)" : " passages)"), c.name));
    }
    if ([...select.options].some((o) => o.value === wanted)) select.value = wanted;
  }

  // ---- rendering answers -------------------------------------------------------------
  function citeButton(citation, span) {
    const button = el("button", "cite", citation.n);
    button.type = "button";
    const where = citation.page != null ? ", page " + citation.page : "";
    button.setAttribute("aria-label", "Source " + citation.n + ": " + citation.source + where);
    button.addEventListener("click", () => openPassage(citation, span));
    return button;
  }

  // Text with its [n] markers as buttons; ``spans`` (n -> this sentence's supporting span) makes a
  // button open the passage at the words that support the sentence it sits in.
  function textParts(text, byNumber, spans) {
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(MARKER)) {
      if (match.index > last) parts.push(document.createTextNode(text.slice(last, match.index)));
      const n = Number(match[1]);
      const citation = byNumber.get(n);
      parts.push(citation ? citeButton(citation, spans && spans.get(n)) : el("span", "cite", match[1]));
      last = match.index + match[0].length;
    }
    if (last < text.length) parts.push(document.createTextNode(text.slice(last)));
    return parts;
  }

  function renderText(target, text, citations) {
    target.replaceChildren(...textParts(text, new Map((citations || []).map((c) => [c.n, c])), null));
  }

  const WHY = {
    no_citation: "no source is cited for this sentence",
    invalid_citation: "it cited a passage that was not retrieved",
    weak: "the cited passage does not say this",
    number: "a number differs from the cited passage",
    name: "a name is not in the cited passage",
    negation: "the cited passage says the opposite",
  };

  // The server's offsets count code points (Python), JavaScript's strings UTF-16 units: an emoji or a
  // math letter is one of the first and two of the second. unit(cp) is the UTF-16 offset of a code point offset.
  function utf16(text) {
    const units = [];
    let at = 0;
    for (const ch of text) { units.push(at); at += ch.length; }
    units.push(at);
    return (cp) => (cp >= 0 && cp < units.length ? units[cp] : -1);
  }

  // The answer sentence by sentence: each unsupported one marked, and says why.
  function renderSentences(target, text, citations, sentences) {
    const byNumber = new Map((citations || []).map((c) => [c.n, c]));
    const unit = utf16(text);
    const parts = [];
    let last = 0;
    for (const s of sentences) {
      const start = unit(s.start), end = unit(s.end);
      if (start < last || end < start) return renderText(target, text, citations); // not ours: plain
      if (start > last) parts.push(document.createTextNode(text.slice(last, start)));
      const node = el("span", "sentence" + (s.supported ? "" : " sentence--unsupported"));
      node.append(...textParts(text.slice(start, end), byNumber, new Map((s.spans || []).map((x) => [x.n, x]))));
      if (!s.supported) {
        let why = "Not supported: " + (WHY[s.reason] || s.reason);
        if (s.suggested) why += " (source [" + s.suggested.n + "] would support it)";
        node.title = why;
        node.append(el("span", "unsupported-badge", "unsupported"));
        node.setAttribute("aria-description", why);
      }
      parts.push(node);
      last = end;
    }
    if (last < text.length) parts.push(document.createTextNode(text.slice(last)));
    target.replaceChildren(...parts);
  }

  // "Document title › Section › Subsection › page N"; the source file name is shown beside it.
  function whereText(c) {
    const path = [c.title && c.title !== c.source ? c.title : "", ...(c.heading || "").split(" > ")];
    if (c.page != null) path.push("page " + c.page);
    return path.map((p) => p.trim()).filter(Boolean).join(" › ");
  }

  // ---- feedback: thumbs up or down under each answer, a comment with a thumbs down -----
  function feedbackBar(requestId) {
    const bar = el("div", "feedback");
    const up = el("button", "secondary feedback-up", "✓ Helpful");
    const down = el("button", "secondary feedback-down", "✗ Not helpful");
    const form = el("form", "feedback-form");
    form.hidden = true;
    const comment = el("textarea");
    comment.className = "feedback-comment";
    comment.rows = 2;
    comment.maxLength = 2000;
    comment.placeholder = "What was wrong or missing? (optional)";
    comment.setAttribute("aria-label", "What was wrong or missing");
    const correction = el("textarea");
    correction.className = "feedback-correction";
    correction.rows = 2;
    correction.maxLength = 8000;
    correction.placeholder = "The right answer, if you know it (optional)";
    correction.setAttribute("aria-label", "The right answer");
    const send = el("button", "", "Send");
    send.type = "submit";
    const status = el("span", "hint feedback-status");
    status.setAttribute("role", "status");
    form.append(comment, correction, send);
    [up, down].forEach((b) => { b.type = "button"; });

    async function give(verdict, text, right) {
      up.disabled = down.disabled = send.disabled = true;
      const body = { request_id: requestId, verdict };
      if (text) body.comment = text;
      if (right) body.correction = right;
      let res;
      try {
        res = await fetch("/feedback", { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body) });
      } catch (_) {
        res = null;
      }
      if (res && res.ok) {
        (verdict === "up" ? up : down).setAttribute("aria-pressed", "true");
        status.textContent = "Thanks: your feedback was sent.";
        form.hidden = true;
      } else {
        status.textContent = res ? (await readError(res)).text : "The server cannot be reached.";
        up.disabled = down.disabled = send.disabled = false;
      }
    }
    up.addEventListener("click", () => give("up", "", ""));
    down.addEventListener("click", () => { form.hidden = false; comment.focus(); });
    form.addEventListener("submit", (e) => { e.preventDefault(); give("down", comment.value.trim(), correction.value.trim()); });
    bar.append(up, down, form, status);
    return bar;
  }

  function renderFinal(view, resp) {
    const citations = resp.citations || [];
    if (resp.sentences && resp.sentences.length) renderSentences(view.text, resp.answer || "", citations, resp.sentences);
    else renderText(view.text, resp.answer || "", citations);
    const support = resp.support || {};
    const unsupported = (resp.sentences || []).filter((s) => !s.supported).length;
    if (unsupported || support.dropped) {
      const notes = [];
      if (unsupported) notes.push(unsupported + (unsupported === 1 ? " sentence is" : " sentences are") + " not supported by the cited passages (marked)");
      if (support.dropped) notes.push(support.dropped + " unsupported " + (support.dropped === 1 ? "sentence was" : "sentences were") + " left out");
      view.box.append(el("p", "support-note", notes.join("; ") + "."));
    }
    if (citations.length) {
      const list = el("ol", "sources");
      list.setAttribute("aria-label", "Sources");
      const best = new Map(); // n -> the span that supports its sentence best
      for (const s of resp.sentences || []) {
        for (const x of s.spans || []) if (!best.has(x.n) || x.score > best.get(x.n).score) best.set(x.n, x);
      }
      for (const c of citations) {
        const item = el("li");
        const link = el("button", "source-link", c.source);
        link.type = "button";
        link.addEventListener("click", () => openPassage(c, best.get(c.n)));
        item.append(citeButton(c, best.get(c.n)), link, el("span", "source-where", whereText(c)));
        list.append(item);
      }
      view.box.append(list);
    }
    if (resp.grounded === false) {
      view.box.classList.add("answer--unknown");
      view.box.append(el("p", "unknown-note", "No passage answers this: try other words or another collection."));
    }
    const meta = [resp.prompt, resp.provider && resp.model ? resp.provider + "/" + resp.model : resp.provider];
    if (resp.collections && resp.collections.length) meta.push("from " + resp.collections.join(", "));
    meta.push(resp.cached ? "cached" : "fresh");
    if (typeof resp.latency_ms === "number") meta.push(Math.round(resp.latency_ms) + " ms");
    view.box.append(el("p", "meta", meta.filter(Boolean).join(" · ")));
    if (resp.request_id) view.box.append(feedbackBar(resp.request_id));
    if (resp.standalone_question && resp.standalone_question !== view.question) {
      view.box.append(el("p", "meta", "searched for: " + resp.standalone_question));
    }
    if (resp.conversation_id && view.box.isConnected) state.conversationId = resp.conversation_id;
  }

  function renderError(view, error) {
    view.box.classList.add("answer--error");
    view.text.textContent = error.text;
    if (error.requestId) view.box.append(el("p", "meta", "request " + error.requestId));
  }

  // ---- the passage panel -------------------------------------------------------------
  function highlighted(passage, snippet) {
    const words = (snippet || "").replace(/…$/, "").split(/\s+/).filter(Boolean).slice(0, 80);
    const at = words.length ? new RegExp(words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("\\s+")) : null;
    const match = at && passage.match(at);
    if (!match) return [document.createTextNode(passage)];
    return [
      document.createTextNode(passage.slice(0, match.index)),
      el("mark", "", match[0]),
      document.createTextNode(passage.slice(match.index + match[0].length)),
    ];
  }

  // The words at [start, end) of the passage: the verifier's offsets, exact (no search).
  function spanParts(passage, start, end, supports) {
    return [
      document.createTextNode(passage.slice(0, start)),
      el("mark", "support" + (supports ? "" : " support--weak"), passage.slice(start, end)),
      document.createTextNode(passage.slice(end)),
    ];
  }

  function openPassage(c, span) {
    $("passage-number").textContent = "Source [" + c.n + "]";
    $("passage-title").textContent = c.source;
    $("passage-where").textContent = whereText(c) || "no page or heading recorded";
    const passage = c.text || c.snippet || "";
    const unit = utf16(passage);
    const [start, end] = span ? [unit(span.start), unit(span.end)] : [-1, -1];
    const exact = span && c.text && start >= 0 && end >= start && passage.slice(start, end) === span.quote;
    $("passage-text").replaceChildren(
      ...(exact ? spanParts(passage, start, end, span.supports) : highlighted(passage, c.snippet)));
    const support = !exact ? "" : span.supports
      ? "The highlighted words support the sentence (support " + span.score.toFixed(2) + ")"
      : "Not supported: " + (WHY[span.mismatch] || WHY.weak) + " (closest words highlighted, support " + span.score.toFixed(2) + ")";
    $("passage-support").textContent = support;
    $("passage-support").hidden = !support;
    $("passage-support").className = "passage-support" + (exact && !span.supports ? " passage-support--weak" : "");
    const score = typeof c.score === "number" ? " · relevance " + c.score.toFixed(2) : "";
    $("passage-meta").textContent = "chunk " + c.chunk_id + score;
    const dialog = $("passage");
    if (!dialog.open) dialog.showModal();
    $("passage-close").focus();
  }

  // ---- asking ------------------------------------------------------------------------
  function newTurn(question) {
    $("empty").hidden = true;
    const turn = el("div", "turn");
    const box = el("article", "answer");
    const text = el("p", "answer-text");
    box.setAttribute("aria-busy", "true");
    box.append(text);
    turn.append(el("p", "question", question), box);
    $("conversation").append(turn);
    turn.scrollIntoView({ block: "end", behavior: "smooth" });
    return { box, text, question };
  }

  function setBusy(busy) {
    $("send").hidden = busy;
    $("stop").hidden = !busy;
  }

  async function ask(question) {
    const view = newTurn(question);
    const body = { question, stream: true };
    if ($("collection").value) body.collection = $("collection").value;
    if (state.conversationId) body.conversation_id = state.conversationId;
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    let final = null, failure = null, streamed = "", frame = 0;
    const paint = () => { frame = 0; renderText(view.text, streamed, null); };
    try {
      const res = await fetch("/chat", {
        method: "POST", body: JSON.stringify(body), signal: controller.signal,
        headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      });
      if (!res.ok) {
        failure = await readError(res);
      } else if (!(res.headers.get("Content-Type") || "").includes("text/event-stream")) {
        final = await res.json(); // a server that does not stream answers in one piece
      } else {
        const parser = window.kbSseParser((event, data) => {
          const payload = JSON.parse(data);
          if (event === "token") {
            streamed += payload.delta || "";
            if (!frame) frame = requestAnimationFrame(paint); // one repaint per frame, not per token
          } else if (event === "done") {
            final = payload;
          } else if (event === "error") {
            const e = payload.error || {};
            failure = describeError(e.status || 0, e.code, e.message, e.request_id, null);
          }
        });
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(decoder.decode(value, { stream: true }));
        }
        parser.end();
      }
    } catch (err) {
      failure = err.name === "AbortError" ? { text: streamed ? streamed + " … (stopped)" : "Stopped." }
        : { text: "The connection to the server was lost before the answer finished." };
    }
    if (frame) cancelAnimationFrame(frame); // a late repaint would drop the citation links
    view.box.setAttribute("aria-busy", "false");
    if (final && !failure) renderFinal(view, final);
    else renderError(view, failure || { text: "The answer stream ended without a final result." });
    $("status").textContent = final && !failure ? "Answer ready." : "The question could not be answered.";
    if (state.controller === controller) { // not when "New conversation" already moved on
      state.controller = null;
      setBusy(false);
    }
  }

  function newConversation() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    setBusy(false);
    state.conversationId = null;
    for (const turn of document.querySelectorAll(".turn")) turn.remove();
    $("empty").hidden = false;
    $("question").focus();
  }

  // ---- wiring ------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("api-key").value = storage(KEY_STORAGE);
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      storage(KEY_STORAGE, $("api-key").value.trim());
      keyState(apiKey() ? "Saved in this browser." : "No key saved.", "");
      loadCollections();
    });
    $("forget-key").addEventListener("click", () => {
      storage(KEY_STORAGE, "");
      $("api-key").value = "";
      keyState("Key forgotten: this browser no longer keeps it.", "");
      loadCollections();
    });
    $("collection").addEventListener("change", () => storage(COLLECTION_STORAGE, $("collection").value));
    $("new-conversation").addEventListener("click", newConversation);
    $("stop").addEventListener("click", () => state.controller && state.controller.abort());
    $("ask-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const question = $("question").value.trim();
      if (!question || state.controller) return;
      $("question").value = "";
      ask(question);
    });
    $("question").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("ask-form").requestSubmit();
      }
    });
    const dialog = $("passage");
    $("passage-close").addEventListener("click", () => dialog.close());
    dialog.addEventListener("click", (e) => { // a click on the backdrop, outside the panel, closes it
      const r = dialog.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
      if (e.target === dialog && !inside) dialog.close();
    });
    $("question").focus();
    $("sign-out").addEventListener("click", signOut);
    loadAccount().then(loadCollections, loadCollections);
  });
})();
