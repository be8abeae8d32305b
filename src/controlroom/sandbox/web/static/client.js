// Control Room sandbox: the web client's behaviour. Plain ES module, no dependencies.
// The server renders every piece of HTML; this file sends actions (JSON POSTs with the
// page's CSRF token) and re-fetches fragments when the live event stream says so.

const body = document.body;
const token = body.dataset.token;
const current = body.dataset.current;
const channelId = body.dataset.channel || null;
const state = { thread: null, pickerFor: null, editing: false, refreshing: new Set() };

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// -- server calls ---------------------------------------------------------------------
async function api(path, payload) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
      body: JSON.stringify(payload || {}),
      credentials: "same-origin",
    });
  } catch (err) {
    toast("The sandbox is not reachable");
    return { ok: false, error: "network", detail: String(err) };
  }
  let data;
  try {
    data = await response.json();
  } catch (err) {
    data = { ok: false, error: "bad_response", detail: `HTTP ${response.status}` };
  }
  if (data.ok && data.delivered === false && data.warning) toast(data.warning);
  return data;
}

async function fragment(name, params = {}) {
  const query = new URLSearchParams(params).toString();
  const response = await fetch(`/web/fragment/${name}${query ? "?" + query : ""}`, {
    credentials: "same-origin",
  });
  if (!response.ok) return null;
  return response.text();
}

function toast(text) {
  const el = $("#toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 5000);
}

// -- fragments --------------------------------------------------------------------------
function nearBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
}

async function refreshMessages() {
  const box = $("#messages");
  if (!box || state.editing) return;
  const stick = nearBottom(box);
  const html = await fragment("messages", { c: box.dataset.channel });
  if (html === null || state.editing) return;
  box.innerHTML = html;
  markSelfMentions(box);
  if (stick) box.scrollTop = box.scrollHeight;
}

async function refreshThread() {
  const panel = $("#thread");
  if (!state.thread) return;
  const html = await fragment("thread", { c: state.thread.channel, ts: state.thread.ts });
  if (html === null) {
    closeThread();
    return;
  }
  const box = $("#thread-messages", panel);
  const stick = !box || nearBottom(box);
  const draft = $("#thread-composer textarea", panel)?.value || "";
  panel.innerHTML = html;
  panel.hidden = false;
  markSelfMentions(panel);
  const area = $("#thread-composer textarea", panel);
  if (area) area.value = draft;
  const fresh = $("#thread-messages", panel);
  if (fresh && stick) fresh.scrollTop = fresh.scrollHeight;
}

async function refreshModal() {
  const root = $("#modal-root");
  const old = $("#modal", root);
  const kept = {};
  if (old) {
    for (const el of $$("[data-input]", old)) if ("value" in el && !el.multiple) kept[inputKey(el)] = el.value;
  }
  const html = await fragment("modal");
  if (html === null) return;
  root.innerHTML = html;
  const fresh = $("#modal", root);
  if (fresh && old && fresh.dataset.viewId === old.dataset.viewId) {
    for (const el of $$("[data-input]", fresh)) {
      if (kept[inputKey(el)] !== undefined) el.value = kept[inputKey(el)];
    }
  }
  if (fresh && !old) $("[data-input]", fresh)?.focus();
}

async function refreshHome() {
  const root = $("#home-root");
  if (!root) return;
  const html = await fragment("home");
  if (html !== null) root.innerHTML = html;
}

async function refreshSidebar() {
  const html = await fragment("sidebar", { active: body.dataset.active || "" });
  if (html !== null) $("#sidebar").innerHTML = html;
}

function markSelfMentions(root = document) {
  for (const el of $$(".mention[data-user]", root)) {
    el.classList.toggle("me", el.dataset.user === body.dataset.user);
  }
}

// Coalesce bursts of notices into one fetch per fragment.
function schedule(name, fn) {
  if (state.refreshing.has(name)) return;
  state.refreshing.add(name);
  setTimeout(async () => {
    state.refreshing.delete(name);
    try {
      await fn();
    } catch (err) {
      console.warn("refresh failed", name, err);
    }
  }, 30);
}

function refreshChannel(channel) {
  if (!channel || channel === channelId) schedule("messages", refreshMessages);
  if (state.thread && (!channel || channel === state.thread.channel)) {
    schedule("thread", refreshThread);
  }
}

// -- live updates ---------------------------------------------------------------------------
function listen() {
  const source = new EventSource("/web/events");
  let dropped = false;
  source.onopen = () => {
    body.classList.add("live");
    if (dropped) {
      // changes may have been missed while the stream was down
      refreshChannel(null);
      schedule("modal", refreshModal);
      schedule("sidebar", refreshSidebar);
      if (current === "home") schedule("home", refreshHome);
    }
  };
  source.onerror = () => {
    dropped = true;
    body.classList.remove("live");
  };
  source.onmessage = (event) => {
    let notice;
    try {
      notice = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    if (notice.kind === "channel") refreshChannel(notice.channel);
    else if (notice.kind === "view") {
      schedule("modal", refreshModal);
      if (current === "home") schedule("home", refreshHome);
    } else if (notice.kind === "sidebar") schedule("sidebar", refreshSidebar);
    else {
      refreshChannel(null);
      schedule("modal", refreshModal);
      if (current === "home") schedule("home", refreshHome);
    }
  };
  window.addEventListener("pagehide", () => source.close());
}

// -- dialogs ----------------------------------------------------------------------------------
function confirmDialog(content) {
  const backdrop = $("#dialog");
  const box = $(".dialog", backdrop);
  box.replaceChildren(content);
  backdrop.hidden = false;
  return new Promise((resolve) => {
    const done = (answer) => {
      backdrop.hidden = true;
      box.replaceChildren();
      backdrop.onclick = null;
      document.removeEventListener("keydown", onKey);
      resolve(answer);
    };
    const onKey = (e) => {
      if (e.key === "Escape") done(false);
    };
    document.addEventListener("keydown", onKey);
    backdrop.onclick = (e) => {
      const choice = e.target.closest("[data-dialog]");
      if (choice) done(choice.dataset.dialog === "confirm");
      else if (e.target === backdrop) done(false);
    };
    $("[data-dialog=confirm]", box)?.focus();
  });
}

function simpleDialog(title, text, confirmLabel, danger) {
  const frag = document.createDocumentFragment();
  const t = document.createElement("div");
  t.className = "dialog-title";
  t.textContent = title;
  const p = document.createElement("div");
  p.className = "dialog-text";
  p.textContent = text;
  const buttons = document.createElement("div");
  buttons.className = "dialog-buttons";
  const no = document.createElement("button");
  no.type = "button";
  no.className = "btn";
  no.dataset.dialog = "deny";
  no.textContent = "Cancel";
  const yes = document.createElement("button");
  yes.type = "button";
  yes.className = `btn ${danger ? "danger" : "primary"}`;
  yes.dataset.dialog = "confirm";
  yes.textContent = confirmLabel;
  buttons.append(no, yes);
  frag.append(t, p, buttons);
  return confirmDialog(frag);
}

async function confirmFor(el) {
  if (!("confirm" in el.dataset)) return true;
  const tpl = el.parentElement.querySelector("template.confirm-tpl");
  if (!tpl) return true;
  return confirmDialog(tpl.content.cloneNode(true));
}

// -- containers: a message, or a view (modal / home) --------------------------------------------
function container(el) {
  const box = el.closest("[data-container]");
  if (!box) return null;
  if (box.dataset.container === "view") return { view_id: box.dataset.viewId };
  return { channel: box.dataset.channel, ts: box.dataset.ts };
}

// -- composer ------------------------------------------------------------------------------
async function send(form) {
  const area = $("textarea", form);
  const error = $(".composer-error", form);
  const text = area.value;
  if (!text.trim()) return;
  error.textContent = "";
  const channel = form.dataset.channel;
  let result;
  if (!form.dataset.threadTs && text.startsWith("/")) {
    const match = text.match(/^(\/\S+)\s*([\s\S]*)$/);
    result = await api("/web/command", { channel, command: match[1], text: match[2] });
  } else {
    const payload = { channel, text };
    if (form.dataset.threadTs) {
      payload.thread_ts = form.dataset.threadTs;
      payload.broadcast = Boolean(form.elements.broadcast?.checked);
    }
    result = await api("/web/post", payload);
  }
  if (!result.ok) {
    error.textContent = result.detail || result.error;
    return;
  }
  area.value = "";
  const hints = $("#command-hints");
  if (hints) hints.hidden = true;
  if (form.elements.broadcast) form.elements.broadcast.checked = false;
  refreshChannel(channel);
}

document.addEventListener("submit", (e) => {
  const form = e.target;
  if (form.matches("#composer, #thread-composer")) {
    e.preventDefault();
    send(form);
  } else if (form.closest("#modal")) {
    e.preventDefault();
    submitModal(form.closest("#modal"));
  }
});

document.addEventListener("keydown", (e) => {
  const area = e.target;
  if (e.key === "Enter" && !e.shiftKey && area.matches("#composer textarea, #thread-composer textarea")) {
    e.preventDefault();
    area.form.requestSubmit();
  }
  if (e.key === "Escape") {
    closePicker();
    closeMenus();
    const modal = $("#modal");
    if (modal && $("#dialog").hidden) $("[data-close-view]", modal)?.click();
  }
});

// Slash command hints above the composer while a command name is being typed.
document.addEventListener("input", (e) => {
  if (!e.target.matches("#composer textarea")) return;
  const hints = $("#command-hints");
  if (!hints) return;
  const typed = e.target.value;
  const open = /^\/\S*$/.test(typed);
  let shown = 0;
  for (const b of $$("[data-command]", hints)) {
    const match = open && b.dataset.command.startsWith(typed);
    b.hidden = !match;
    if (match) shown += 1;
  }
  hints.hidden = shown === 0;
});

// -- modals --------------------------------------------------------------------------------------
function inputKey(el) {
  return `${el.dataset.blockId}/${el.dataset.actionId}`;
}

function inputValue(el) {
  const type = el.dataset.type;
  if (type === "radio_buttons") {
    const picked = $("input:checked", el);
    return picked ? picked.value : { selected_option: null };
  }
  if (type === "checkboxes") return $$("input:checked", el).map((i) => i.value);
  if (el.multiple) return Array.from(el.selectedOptions).map((o) => o.value);
  if (type === "timepicker") return { selected_time: el.value || null };
  const value = el.value;
  if (["static_select", "radio_buttons"].includes(type)) {
    return value ? value : { selected_option: null };
  }
  if (type === "users_select") return value ? value : { selected_user: null };
  if (type === "conversations_select") return value ? value : { selected_conversation: null };
  if (type === "channels_select") return value ? value : { selected_channel: null };
  if (type === "datepicker") return value ? value : { selected_date: null };
  return value === "" ? null : value;
}

function isEmpty(el) {
  if (el.dataset.type === "radio_buttons" || el.dataset.type === "checkboxes") {
    return !$("input:checked", el);
  }
  if (el.multiple) return el.selectedOptions.length === 0;
  return !el.value.trim();
}

async function submitModal(modal) {
  for (const el of $$(".b-error", modal)) el.textContent = "";
  $(".modal-error", modal).textContent = "";
  const values = {};
  let missing = false;
  for (const el of $$("[data-input]", modal)) {
    if ("required" in el.dataset && isEmpty(el)) {
      const slot = $(`[data-error-for="${CSS.escape(el.dataset.blockId)}"]`, modal);
      if (slot) slot.textContent = "Please fill out this field.";
      missing = true;
    }
    values[el.dataset.blockId] ??= {};
    values[el.dataset.blockId][el.dataset.actionId] = inputValue(el);
  }
  if (missing) return;
  const submit = $("button[type=submit]", modal);
  if (submit) submit.disabled = true;
  const result = await api("/web/view/submit", { view_id: modal.dataset.viewId, values });
  if (submit) submit.disabled = false;
  if (!result.ok) {
    $(".modal-error", modal).textContent = result.detail || result.error;
    return;
  }
  if (result.delivered === false) {
    $(".modal-error", modal).textContent = result.warning;
    return;
  }
  const errors = result.errors || {};
  if (Object.keys(errors).length) {
    for (const [blockId, message] of Object.entries(errors)) {
      const slot = $(`[data-error-for="${CSS.escape(blockId)}"]`, modal);
      if (slot) slot.textContent = message;
      else $(".modal-error", modal).textContent = `${blockId}: ${message}`;
    }
    return;
  }
  await refreshModal();
}

// -- reactions and the picker ------------------------------------------------------------------
function openPicker(button) {
  const msg = button.closest("[data-container=message]");
  if (!msg) return;
  const picker = $("#picker");
  state.pickerFor = { channel: msg.dataset.channel, ts: msg.dataset.ts };
  picker.hidden = false;
  const rect = button.getBoundingClientRect();
  const top = Math.min(rect.bottom + 4, window.innerHeight - picker.offsetHeight - 8);
  const left = Math.min(rect.left, window.innerWidth - picker.offsetWidth - 8);
  picker.style.top = `${Math.max(8, top)}px`;
  picker.style.left = `${Math.max(8, left)}px`;
}

function closePicker() {
  $("#picker").hidden = true;
  state.pickerFor = null;
}

async function react(target, name) {
  const result = await api("/web/react", { ...target, name });
  if (!result.ok) toast(result.detail || result.error);
  refreshChannel(target.channel);
}

function closeMenus() {
  for (const menu of $$(".more-menu:not([hidden])")) menu.hidden = true;
  for (const msg of $$(".msg.menu-open")) msg.classList.remove("menu-open");
  const sw = $("#switcher-menu");
  if (sw) sw.hidden = true;
}

// -- threads ------------------------------------------------------------------------------------
function rememberThread() {
  const url = new URL(window.location.href);
  if (state.thread) url.searchParams.set("t", state.thread.ts);
  else url.searchParams.delete("t");
  window.history.replaceState(null, "", url.toString());
}

async function openThread(channel, ts) {
  state.thread = { channel, ts };
  rememberThread();
  body.classList.add("thread-open");
  await refreshThread();
  $("#thread-composer textarea")?.focus();
}

function closeThread() {
  state.thread = null;
  rememberThread();
  const panel = $("#thread");
  panel.hidden = true;
  panel.innerHTML = "";
  body.classList.remove("thread-open");
}

// -- editing -------------------------------------------------------------------------------------
function startEdit(msg) {
  const textBox = $(".msg-text", msg);
  if (!textBox || state.editing) return;
  state.editing = true;
  const form = document.createElement("form");
  form.className = "edit-form";
  const area = document.createElement("textarea");
  area.value = msg.dataset.raw || textBox.innerText.replace(/\s*\(edited\)$/, "");
  const bar = document.createElement("div");
  bar.className = "edit-buttons";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "btn";
  cancel.textContent = "Cancel";
  const save = document.createElement("button");
  save.type = "submit";
  save.className = "btn primary";
  save.textContent = "Save";
  bar.append(cancel, save);
  form.append(area, bar);
  textBox.hidden = true;
  textBox.after(form);
  area.focus();
  const finish = () => {
    state.editing = false;
    refreshChannel(msg.dataset.channel);
  };
  cancel.onclick = () => {
    form.remove();
    textBox.hidden = false;
    state.editing = false;
    refreshChannel(msg.dataset.channel); // catch up on changes skipped while editing
  };
  form.onsubmit = async (e) => {
    e.preventDefault();
    e.stopPropagation();
    const result = await api("/web/edit", {
      channel: msg.dataset.channel,
      ts: msg.dataset.ts,
      text: area.value,
    });
    if (!result.ok) {
      toast(result.detail || result.error);
      return;
    }
    finish();
  };
  area.onkeydown = (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      form.requestSubmit();
    } else if (e.key === "Escape") cancel.onclick();
  };
}

// -- clicks ------------------------------------------------------------------------------------
document.addEventListener("click", async (e) => {
  const el = e.target.closest("button, a");
  if (!el) {
    if (!e.target.closest("#picker")) closePicker();
    if (!e.target.closest(".more-menu, .switcher")) closeMenus();
    return;
  }
  const data = el.dataset;
  if (data.command) {
    const area = $("#composer textarea");
    area.value = `${data.command} `;
    $("#command-hints").hidden = true;
    area.focus();
    return;
  }
  if (el.id === "switcher-btn") {
    const menu = $("#switcher-menu");
    menu.hidden = !menu.hidden;
    el.setAttribute("aria-expanded", String(!menu.hidden));
    return;
  }
  if (data.switch) {
    const where = current === "home" ? "home" : channelId;
    const result = await api("/web/user", where ? { user: data.switch, channel: where } : { user: data.switch });
    if (!result.ok) {
      toast(result.detail || result.error);
      return;
    }
    const next = new URL(result.next, window.location.href);
    if (state.thread && next.searchParams.get("c") === state.thread.channel) {
      next.searchParams.set("t", state.thread.ts);
    }
    window.location.assign(next.toString());
    return;
  }
  if (data.pick !== undefined && state.pickerFor) {
    const target = state.pickerFor;
    closePicker();
    await react(target, data.pick);
    return;
  }
  if (!el.closest("#picker")) closePicker();
  if (data.picker !== undefined) {
    e.stopPropagation();
    openPicker(el);
    return;
  }
  if (data.react) {
    const msg = el.closest("[data-container=message]");
    await react({ channel: msg.dataset.channel, ts: msg.dataset.ts }, data.react);
    return;
  }
  if (data.thread) {
    const msg = el.closest("[data-container=message]");
    await openThread(msg.dataset.channel, data.thread);
    return;
  }
  if (data.closeThread !== undefined) {
    closeThread();
    return;
  }
  if (data.more !== undefined) {
    const menu = el.parentElement.querySelector(".more-menu");
    const wasHidden = menu.hidden;
    closeMenus();
    menu.hidden = !wasHidden;
    el.closest(".msg")?.classList.toggle("menu-open", !menu.hidden);
    if (!menu.hidden) {
      // open upwards when the scrolling pane would clip the menu
      menu.classList.remove("up");
      const pane = el.closest(".messages, .thread-messages");
      const limit = pane ? pane.getBoundingClientRect().bottom : window.innerHeight;
      if (menu.getBoundingClientRect().bottom > limit) menu.classList.add("up");
    }
    return;
  }
  if (el.id === "global-shortcuts") {
    const menu = $("#global-menu");
    menu.hidden = !menu.hidden;
    return;
  }
  if (data.edit !== undefined) {
    const msg = el.closest("[data-container=message]");
    closeMenus();
    startEdit(msg);
    return;
  }
  if (data.delete !== undefined) {
    const msg = el.closest("[data-container=message]");
    closeMenus();
    const sure = await simpleDialog(
      "Delete message",
      "Are you sure you want to delete this message? This cannot be undone.",
      "Delete",
      true,
    );
    if (!sure) return;
    const result = await api("/web/delete", { channel: msg.dataset.channel, ts: msg.dataset.ts });
    if (!result.ok) toast(result.detail || result.error);
    refreshChannel(msg.dataset.channel);
    return;
  }
  if (data.shortcut) {
    const msg = el.closest("[data-container=message]");
    closeMenus();
    await api("/web/shortcut", {
      callback_id: data.shortcut,
      channel: msg.dataset.channel,
      ts: msg.dataset.ts,
    });
    return;
  }
  if (data.globalShortcut) {
    closeMenus();
    await api("/web/shortcut", { callback_id: data.globalShortcut });
    return;
  }
  if (data.join) {
    const result = await api("/web/join", { channel: data.join });
    if (result.ok) window.location.reload();
    else toast(result.detail || result.error);
    return;
  }
  if (data.closeView !== undefined) {
    const modal = el.closest("#modal");
    await api("/web/view/close", { view_id: modal.dataset.viewId });
    await refreshModal();
    return;
  }
  if (el.classList.contains("block-btn")) {
    if (!(await confirmFor(el))) return;
    const where = container(el);
    if (!where) return;
    if (data.url && data.url !== "#") window.open(data.url, "_blank", "noopener");
    el.disabled = true;
    const payload = { ...where, action_id: data.actionId };
    if (data.value !== undefined) payload.value = data.value;
    const result = await api("/web/action", payload);
    el.disabled = false;
    if (!result.ok) toast(result.detail || result.error);
    return;
  }
  if (!el.closest(".more-menu, .switcher")) closeMenus();
});

document.addEventListener("change", async (e) => {
  const el = e.target;
  if (!el.matches("select.block-select")) return;
  const value = el.value;
  if (!(await confirmFor(el))) {
    el.selectedIndex = 0;
    return;
  }
  const where = container(el);
  if (!where || !where.channel) {
    toast("Selects inside views are not dispatched in the sandbox");
    return;
  }
  const result = await api("/web/select", { ...where, action_id: el.dataset.actionId, value });
  if (!result.ok) toast(result.detail || result.error);
});

// -- start ------------------------------------------------------------------------------------------
function start() {
  markSelfMentions();
  const box = $("#messages");
  if (box) box.scrollTop = box.scrollHeight;
  listen();
  if (current === "home") {
    api("/web/home/open", {}).then(() => schedule("home", refreshHome));
  }
  const thread = new URL(window.location.href).searchParams.get("t");
  if (channelId && thread && /^\d+\.\d+$/.test(thread)) openThread(channelId, thread);
  else $("#composer textarea")?.focus();
  body.classList.add("ready");
}

start();
