// HappyX operator console. Plain JS, no build step. Everything an agent
// controls is inserted as text (textContent / text nodes), never as markup.
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const main = $('#main');
  let me = null; // the console session: {actor, role, csrf_token, ...}
  let stream = null;
  let page = null; // {name, onEvent, stop}
  let pendingTimer = null;

  // ---------- DOM helpers (text only) ----------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  // Characters that change how text reads without being seen: bidi controls,
  // marks, and control characters. Shown as \u{XXXX} in a highlighted span.
  const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\u200b-\u200d\u2028\u2029\ufeff]/u;
  function visible(str) {
    const frag = document.createDocumentFragment();
    let run = '';
    for (const ch of String(str)) {
      if (INVISIBLE.test(ch)) {
        if (run) { frag.append(document.createTextNode(run)); run = ''; }
        const cp = ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
        const s = h('span', { class: 'esc', title: 'invisible character U+' + cp });
        s.textContent = '\\u{' + cp + '}';
        frag.append(s);
      } else {
        run += ch;
      }
    }
    if (run) frag.append(document.createTextNode(run));
    return frag;
  }

  function abs(ms) { return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : ''; }
  function rel(ms) {
    if (!ms) return '—';
    const d = Math.round((Date.now() - ms) / 1000);
    const a = Math.abs(d);
    let s;
    if (a < 60) s = a + ' s';
    else if (a < 3600) s = Math.floor(a / 60) + ' min';
    else if (a < 86400) s = Math.floor(a / 3600) + ' h';
    else s = Math.floor(a / 86400) + ' d';
    return d >= 0 ? s + ' ago' : 'in ' + s;
  }
  function time(ms) { return h('time', { datetime: ms ? new Date(ms).toISOString() : null, title: abs(ms) }, rel(ms)); }
  function left(ms) {
    const d = Math.round((ms - Date.now()) / 1000);
    if (d <= 0) return 'expired';
    if (d < 60) return d + ' s left';
    if (d < 3600) return Math.floor(d / 60) + ' min ' + (d % 60) + ' s left';
    return Math.floor(d / 3600) + ' h ' + Math.floor((d % 3600) / 60) + ' min left';
  }
  function bytes(n) {
    if (n === null || n === undefined) return '—';
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    if (n < 1073741824) return (n / 1048576).toFixed(1) + ' MiB';
    return (n / 1073741824).toFixed(2) + ' GiB';
  }
  function id(v, title) { return h('span', { class: 'mono id', title: title || v }, v ? String(v) : '—'); }
  function shortId(v) { return h('span', { class: 'mono id', title: v }, v ? String(v).slice(-12) : '—'); }
  function badge(kind, value) { return h('span', { class: 'badge ' + kind + '-' + value }, value); }
  function toast(msg) {
    const t = h('div', {}, msg);
    $('#toast').append(t);
    setTimeout(() => t.remove(), 4000);
  }
  function table(headers, rows, widths) {
    const cols = h('colgroup', {}, headers.map((_, i) => h('col', { style: null, class: widths ? 'w-' + widths[i] : null })));
    const t = h('table', {}, cols,
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows));
    if (widths) widths.forEach((w, i) => { cols.children[i].style.width = w; });
    // Focusable so a keyboard can scroll it on a narrow screen.
    return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Table: ' + headers.join(', ') }, t);
  }
  function empty(n, msg) { return h('tr', {}, h('td', { colspan: n, class: 'muted wrap' }, msg)); }

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.message ? body.message : 'HTTP ' + status);
      this.status = status; this.body = body || {};
    }
  }
  async function api(method, path, body) {
    const headers = {};
    if (method !== 'GET') {
      headers['X-CSRF-Token'] = me ? me.csrf_token : '';
    }
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const ct = r.headers.get('content-type') || '';
    const data = ct.includes('json') ? await r.json() : await r.text();
    if (r.status === 401 && me && path !== '/v1/console/session') {
      signedOut('Your console session ended. Sign in again.');
    }
    if (!r.ok) throw new ApiError(r.status, typeof data === 'object' ? data : { message: String(data) });
    return data;
  }
  const isOperator = () => me && me.role === 'operator';

  // ---------- session ----------
  function showSignIn(message) {
    $('#top').hidden = true;
    stopStream();
    if (page && page.stop) page.stop();
    page = null;
    const err = h('p', { class: 'error', role: 'alert', id: 'signin-error' }, message || '');
    const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
    const form = h('form', {
      onsubmit: async (e) => {
        e.preventDefault();
        err.textContent = '';
        try {
          me = await api('POST', '/v1/console/session', { token: input.value.trim() });
          input.value = '';
          start();
        } catch (x) {
          input.value = '';
          err.textContent = x.body && x.body.code === 'console_forbidden'
            ? 'Agent tokens cannot sign in. Use an operator or viewer token.'
            : x.status === 401 ? 'That token is not valid.' : x.message;
        }
      },
    },
    h('label', { for: 'token' }, 'Token'), input,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'), err,
    h('p', { class: 'hint' }, 'An operator or viewer token (hpx_…). It is exchanged for a console session and never kept in the browser.'));
    main.replaceChildren(h('section', { class: 'signin', 'aria-labelledby': 'signin-title' },
      h('h1', { id: 'signin-title' }, 'HappyX console'), form));
    input.focus();
  }
  function signedOut(message) { me = null; showSignIn(message); }

  async function signOut() {
    try { await api('DELETE', '/v1/console/session'); } catch (_) { /* already gone */ }
    signedOut('Signed out.');
    location.hash = '';
  }

  function start() {
    $('#top').hidden = false;
    $('#who').replaceChildren(h('span', { title: me.actor }, me.role + ' · '), h('span', { class: 'mono vol' }, me.token_id));
    startStream();
    refreshPending();
    route();
  }

  // ---------- live events ----------
  const listeners = new Set();
  function startStream() {
    stopStream();
    const live = $('#live');
    const es = new EventSource('/v1/events/stream');
    stream = es;
    es.onopen = () => {
      live.textContent = 'live'; live.className = 'live on';
      // The stream starts at the log's end as it opens: what changed between a page's listing
      // and this moment is in neither, so list again now (the stream carries what follows).
      refreshPendingSoon();
      if (page && page.refresh) page.refresh();
    };
    es.onerror = async () => {
      live.textContent = 'reconnecting'; live.className = 'live off';
      if (es.readyState === EventSource.CLOSED) {
        try { me = await api('GET', '/v1/console/session'); setTimeout(startStream, 1000); } catch (_) { signedOut('Your console session ended. Sign in again.'); }
      } else {
        try { await api('GET', '/v1/console/session'); } catch (x) { if (x.status === 401) { es.close(); signedOut('Your console session ended. Sign in again.'); } }
      }
    };
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      if (ev.code.startsWith('approval.') || ev.code === 'run.created' || ev.code === 'pty.created') refreshPendingSoon();
      for (const f of listeners) f(ev);
      if (page && page.onEvent) page.onEvent(ev);
    };
  }
  function stopStream() {
    if (stream) stream.close();
    stream = null;
  }
  function refreshPendingSoon() { clearTimeout(pendingTimer); pendingTimer = setTimeout(refreshPending, 150); }
  async function refreshPending() {
    try {
      const r = await api('GET', '/v1/approvals?status=pending&limit=500');
      const c = $('#pending-count');
      c.textContent = String(r.items.length);
      c.hidden = r.items.length === 0;
      c.setAttribute('aria-label', r.items.length + ' pending');
    } catch (_) { /* shown elsewhere */ }
  }
  function debounce(f, ms) { let t = null; return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); }; }

  // ---------- router ----------
  const pages = {};
  async function route() {
    if (!me) return;
    if (page && page.stop) page.stop();
    page = null;
    const parts = (location.hash.replace(/^#\/?/, '') || 'overview').split('/');
    const name = pages[parts[0]] ? parts[0] : 'overview';
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.page === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    const p = { name, stop: null, onEvent: null, refresh: null };
    page = p;
    main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      await pages[name](p, parts.slice(1).map(decodeURIComponent));
    } catch (x) {
      if (page === p) main.replaceChildren(h('h1', {}, 'Error'), h('p', { class: 'error', role: 'alert' }, x.message));
    }
    if (page === p) document.title = (main.querySelector('h1') ? main.querySelector('h1').textContent + ' · ' : '') + 'HappyX console';
  }
  window.addEventListener('hashchange', () => { route(); main.focus({ preventScroll: true }); });

  function mount(p, ...nodes) { if (page === p) main.replaceChildren(...nodes); }

  // ---------- Overview ----------
  pages.overview = async (p) => {
    const draw = async () => {
      const [o, tasks] = await Promise.all([
        api('GET', '/v1/console/overview'),
        api('GET', '/v1/tasks?limit=20').catch(() => ({ items: [] })),
      ]);
      const stat = (k, v, href, vol) => h('div', { class: 'stat' }, h('div', { class: 'k' }, k),
        h('div', { class: 'v' + (vol ? ' vol' : '') }, href ? h('a', { href }, String(v)) : String(v)));
      const prune = o.last_prune;
      mount(p,
        h('h1', {}, 'Overview'),
        h('div', { class: 'grid' },
          stat('Pending approvals', o.pending_approvals, '#/approvals'),
          stat('Live runs', o.live_runs, '#/runs'),
          stat('Live terminals', o.live_terminals, '#/terminals'),
          stat('Health', 'ok'),
          stat('Version', o.version),
          stat('Storage', bytes(o.storage_bytes), null, true),
          stat('Events', o.last_event_seq, '#/audit', true),
          h('div', { class: 'stat' }, h('div', { class: 'k' }, 'Last prune'),
            h('div', { class: 'v' }, prune ? time(prune.at) : 'never'))),
        h('h2', {}, 'Plugins serving'),
        pluginTable(o.plugins, false),
        h('h2', {}, 'Tasks'),
        table(['Title', 'Status', 'Created by', 'Created'],
          tasks.items.length ? tasks.items.map((t) => h('tr', {},
            h('td', { class: 'wrap', title: t.title }, visible(t.title)), h('td', {}, badge('st', t.status)),
            h('td', {}, id(t.created_by)), h('td', {}, time(t.created_at))))
            : [empty(4, 'No tasks.')], ['46%', '14%', '22%', '18%']));
    };
    await draw();
    const again = debounce(() => draw().catch(() => {}), 500);
    p.onEvent = () => again();
    p.refresh = again;
  };

  function pluginTable(plugins, full) {
    const head = ['Kind', 'Name', 'Version', 'sha256', 'Loaded', 'Last error'];
    if (full) head.push('Calls', 'Failures');
    return table(head, plugins.length ? plugins.map((x) => h('tr', {},
      h('td', {}, x.kind), h('td', {}, x.name), h('td', {}, x.version),
      h('td', {}, id(x.sha256)), h('td', {}, time(x.loaded_at)),
      h('td', { class: 'wrap' + (x.last_error ? ' error' : ' muted') }, x.last_error || 'none'),
      full ? h('td', { class: 'vol' }, x.calls) : null, full ? h('td', { class: 'vol' }, x.failures) : null))
      : [empty(head.length, 'No plugins are loaded.')],
    full ? ['12%', '18%', '9%', '20%', '11%', '18%', '6%', '6%'] : ['12%', '20%', '10%', '24%', '12%', '22%']);
  }

  // ---------- Approvals ----------
  function commandBlock(action) {
    const pre = h('pre', { class: 'cmd mono', 'aria-label': 'Command that will run' });
    const c = action && action.command;
    if (c && typeof c.program === 'string') {
      pre.append(visible(c.program));
      for (const a of c.args || []) {
        pre.append(h('span', { class: 'sep' }, ' '), '\u2039', visible(a), '\u203a');
      }
    } else if (action && action.attach) {
      pre.append('attach ', visible(action.attach.mode || ''), ' to terminal ', visible(action.attach.pty_id || ''));
    } else {
      pre.append(visible(JSON.stringify(action)));
    }
    return pre;
  }
  function actionSummary(a) {
    const c = a.action && a.action.command;
    if (c) return [c.program].concat(c.args || []).join(' ');
    if (a.action && a.action.attach) return 'attach ' + a.action.attach.mode;
    return a.kind;
  }

  function approvalCard(a, onDone) {
    const act = a.action || {};
    const risk = act.risk || 'high';
    const self = a.requester === me.actor && !me.allow_self_approval;
    const reason = h('input', { type: 'text', name: 'reason', maxlength: '500', autocomplete: 'off', id: 'reason-' + a.id });
    const decide = async (verb, btn) => {
      btn.disabled = true;
      try {
        const body = reason.value.trim() ? { reason: reason.value.trim() } : undefined;
        await api('POST', '/v1/approvals/' + encodeURIComponent(a.id) + '/' + verb, body);
        toast(verb === 'approve' ? 'Approved' : 'Denied');
        onDone();
      } catch (x) {
        btn.disabled = false;
        toast(x.message);
      }
    };
    let actions;
    if (!isOperator()) {
      actions = h('div', { class: 'actions' }, h('p', { class: 'note', style: null }, 'Viewers see approvals but cannot decide them.'));
    } else if (self) {
      actions = h('div', { class: 'actions' }, h('p', { class: 'note bad' }, 'Self-approval is not allowed: you requested this action. Another operator must decide it.'));
    } else {
      const ok = h('button', { type: 'button', class: 'approve', onclick: (e) => decide('approve', e.currentTarget) }, 'Approve');
      const no = h('button', { type: 'button', class: 'danger', onclick: (e) => decide('deny', e.currentTarget) }, 'Deny');
      actions = h('div', { class: 'actions' }, h('label', { for: reason.id }, 'Reason (optional)', reason), ok, no);
    }
    const ttl = h('span', { class: 'left vol', 'data-expires': a.expires_at }, left(a.expires_at));
    const args = act.args && typeof act.args === 'object' ? Object.entries(act.args) : [];
    return h('article', { class: 'card approval', 'aria-label': 'Approval ' + a.id, 'data-id': a.id },
      h('div', { class: 'card-head' }, badge('risk', risk), h('strong', {}, a.kind === 'run' ? 'Run' : a.kind === 'pty' ? 'Open terminal' : 'Attach to terminal'),
        h('span', {}, 'recipe ', h('code', {}, visible(act.recipe || '—'))), ttl),
      h('div', { class: 'card-body' },
        commandBlock(act),
        h('dl', { class: 'kv' },
          args.length ? [h('dt', {}, 'Arguments'), h('dd', {}, args.map(([k, v]) => h('div', { class: 'mono' }, visible(k), ' = ', visible(v))))] : null,
          h('dt', {}, 'Requester'), h('dd', {}, id(a.requester)),
          h('dt', {}, 'Session'), h('dd', {}, id(act.session_id || null)),
          h('dt', {}, 'Requested'), h('dd', {}, time(a.created_at)),
          h('dt', {}, 'Approval'), h('dd', {}, id(a.id)),
          h('dt', {}, 'Action hash'), h('dd', {}, id(a.action_hash)))),
      actions);
  }

  pages.approvals = async (p) => {
    let stopTick = null;
    const draw = async () => {
      const [pending, all, runs, ptys] = await Promise.all([
        api('GET', '/v1/approvals?status=pending&limit=100'),
        api('GET', '/v1/approvals?limit=100'),
        api('GET', '/v1/runs?order=desc&limit=200').catch(() => ({ items: [] })),
        api('GET', '/v1/pty?limit=200').catch(() => ({ items: [] })),
      ]);
      const byApproval = new Map();
      for (const r of runs.items) if (r.approval_id) byApproval.set(r.approval_id, ['#/runs/' + r.id, 'run ' + r.id.slice(-8)]);
      for (const t of ptys.items) if (t.approval_id) byApproval.set(t.approval_id, ['#/terminals/' + t.id, 'terminal ' + t.id.slice(-8)]);
      const decided = all.items.filter((a) => a.status !== 'pending');
      // A redraw (a new approval, the stream reopening) must not lose a reason being typed.
      const typed = new Map();
      for (const el of main.querySelectorAll('article.approval input[name="reason"]')) if (el.value) typed.set(el.id, el.value);
      const focused = document.activeElement && document.activeElement.id;
      const cards = pending.items.map((a) => approvalCard(a, draw));
      mount(p,
        h('h1', {}, 'Approvals'),
        h('section', { 'aria-labelledby': 'pending-title' },
          h('h2', { id: 'pending-title' }, 'Pending (' + pending.items.length + ')'),
          cards.length ? h('div', { class: 'cards' }, cards) : h('p', { class: 'note' }, 'Nothing is waiting for a decision.')),
        h('section', { 'aria-labelledby': 'history-title' },
          h('h2', { id: 'history-title' }, 'Decisions'),
          table(['Status', 'Kind', 'Command', 'Requester', 'Decided by', 'Decided', 'Result'],
            decided.length ? decided.map((a) => {
              const link = byApproval.get(a.id);
              return h('tr', {},
                h('td', {}, badge('st', a.status)), h('td', {}, a.kind),
                h('td', { class: 'mono', title: actionSummary(a) }, visible(actionSummary(a))),
                h('td', {}, id(a.requester)), h('td', {}, id(a.decider)),
                h('td', {}, time(a.decided_at)),
                h('td', {}, link ? h('a', { href: link[0], class: 'id' }, link[1]) : h('span', { class: 'muted' }, a.status === 'approved' ? 'not used yet' : '—')));
            }) : [empty(7, 'No decisions yet.')],
            ['9%', '7%', '30%', '14%', '14%', '11%', '15%'])));
      for (const [eid, v] of typed) { const el = document.getElementById(eid); if (el) el.value = v; }
      if (focused && focused.startsWith('reason-')) {
        const el = document.getElementById(focused);
        if (el) { el.focus(); el.setSelectionRange(el.value.length, el.value.length); }
      }
    };
    await draw();
    const tick = setInterval(() => {
      for (const el of document.querySelectorAll('[data-expires]')) el.textContent = left(Number(el.dataset.expires));
    }, 1000);
    stopTick = () => clearInterval(tick);
    const again = debounce(() => draw().catch(() => {}), 100);
    p.refresh = again;
    p.onEvent = (ev) => {
      if (ev.code.startsWith('approval.') || ev.code === 'run.created' || ev.code === 'pty.created') again();
    };
    p.stop = () => stopTick && stopTick();
  };

  // ---------- Runs ----------
  const RUN_STATUSES = ['', 'queued', 'running', 'succeeded', 'failed', 'timed_out', 'lost'];
  pages.runs = async (p, args) => {
    if (args[0]) return runPage(p, args[0]);
    const q = new URLSearchParams(location.hash.split('?')[1] || '');
    const sel = (name, label, opts) => h('label', {}, label, h('select', { name }, opts.map((o) => h('option', { value: o, selected: q.get(name) === o && o !== '' }, o || 'any'))));
    const txt = (name, label) => h('label', {}, label, h('input', { name, type: 'text', value: q.get(name) || '', autocomplete: 'off' }));
    const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs' },
      sel('status', 'Status', RUN_STATUSES), sel('risk', 'Risk', ['', 'low', 'medium', 'high']),
      txt('recipe', 'Recipe'), txt('requester', 'Requester'), h('button', { type: 'submit' }, 'Filter'));
    const body = h('tbody');
    const more = h('button', { type: 'button', hidden: true }, 'Older runs');
    let next = null;
    const params = () => {
      const u = new URLSearchParams({ order: 'desc', limit: '100' });
      for (const [k, v] of new FormData(form)) if (v) u.set(k, v);
      return u;
    };
    const row = (r) => h('tr', {},
      h('td', {}, h('a', { href: '#/runs/' + r.id, class: 'mono id', title: r.id }, r.id.slice(-12))),
      h('td', {}, visible(r.recipe)), h('td', {}, badge('risk', r.risk)), h('td', {}, badge('st', r.status)),
      h('td', { class: 'mono' }, r.exit_code === null ? '—' : String(r.exit_code)),
      h('td', {}, id(r.requested_by)), h('td', { class: 'hide-narrow' }, bytes(r.stdout_bytes + r.stderr_bytes)),
      h('td', {}, time(r.created_at)));
    const load = async (append) => {
      const u = params();
      if (append && next) u.set('after', next);
      const r = await api('GET', '/v1/runs?' + u);
      next = r.next;
      more.hidden = !next;
      if (!append) body.replaceChildren();
      body.append(...r.items.map(row));
      if (!body.children.length) body.append(empty(8, 'No runs match.'));
    };
    form.addEventListener('submit', (e) => { e.preventDefault(); load(false).catch((x) => toast(x.message)); });
    more.addEventListener('click', () => load(true).catch((x) => toast(x.message)));
    await load(false);
    const t = table(['Run', 'Recipe', 'Risk', 'Status', 'Exit', 'Requester', 'Output', 'Created'], [], ['13%', '14%', '9%', '11%', '7%', '18%', '11%', '17%']);
    t.querySelector('tbody').replaceWith(body);
    mount(p, h('h1', {}, 'Runs'), form, t, h('div', { class: 'row' }, more));
    const again = debounce(() => load(false).catch(() => {}), 300);
    p.onEvent = (ev) => { if (ev.code.startsWith('run.')) again(); };
    p.refresh = again;
  };

  async function runPage(p, runId) {
    const out = h('pre', { class: 'output mono', 'aria-label': 'Run output', 'aria-live': 'off', tabindex: '0' });
    const meta = h('div');
    let timer = null;
    let last = '';
    const draw = async () => {
      const r = await api('GET', '/v1/runs/' + encodeURIComponent(runId));
      const marks = [];
      if (r.truncated) marks.push(h('span', { class: 'badge st-failed' }, 'truncated'));
      if (r.unredacted_chunks) marks.push(h('span', { class: 'badge st-failed' }, r.unredacted_chunks + ' chunk(s) withheld'));
      if (r.findings) marks.push(h('span', { class: 'badge risk-medium' }, r.findings + ' secret(s) masked'));
      meta.replaceChildren(h('dl', { class: 'kv' },
        h('dt', {}, 'Status'), h('dd', {}, badge('st', r.status), ' ', marks),
        h('dt', {}, 'Exit code'), h('dd', { class: 'mono' }, r.exit_code === null ? '—' : String(r.exit_code)),
        h('dt', {}, 'Recipe'), h('dd', {}, visible(r.recipe), ' ', badge('risk', r.risk)),
        h('dt', {}, 'Requester'), h('dd', {}, id(r.requested_by)),
        h('dt', {}, 'Approval'), h('dd', {}, id(r.approval_id)),
        h('dt', {}, 'Session'), h('dd', {}, id(r.session_id)),
        h('dt', {}, 'Created'), h('dd', {}, time(r.created_at)),
        h('dt', {}, 'Finished'), h('dd', {}, r.finished_at ? time(r.finished_at) : 'still running'),
        h('dt', {}, 'Output'), h('dd', {}, bytes(r.stdout_bytes) + ' stdout, ' + bytes(r.stderr_bytes) + ' stderr')));
      if (isOperator()) {
        const text = await api('GET', '/v1/runs/' + encodeURIComponent(runId) + '/output');
        if (text !== last) {
          const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
          out.textContent = text || '(no output yet)';
          last = text;
          if (atEnd) out.scrollTop = out.scrollHeight;
        }
      } else {
        out.textContent = 'Run output is shown to operators only.';
      }
      return r;
    };
    const r = await draw();
    mount(p, h('p', {}, h('a', { href: '#/runs' }, '← Runs')), h('h1', {}, 'Run ', h('span', { class: 'mono vol' }, r.id)), meta,
      h('h2', {}, 'Output (redacted)'), out);
    const live = (x) => x.status === 'queued' || x.status === 'running';
    if (live(r)) {
      const poll = async () => {
        try { const x = await draw(); if (live(x)) timer = setTimeout(poll, 500); } catch (_) { timer = setTimeout(poll, 2000); }
      };
      timer = setTimeout(poll, 500);
    }
    p.stop = () => clearTimeout(timer);
  }

  // ---------- Terminals ----------
  // xterm.js is large: it is loaded only when a terminal is opened.
  let terminalLoaded = null;
  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = src; s.onload = resolve; s.onerror = () => reject(new Error('cannot load ' + src));
      document.head.append(s);
    });
  }
  function loadTerminal() {
    if (!terminalLoaded) {
      const css = document.createElement('link');
      css.rel = 'stylesheet'; css.href = '/console/vendor/xterm.css';
      document.head.append(css);
      terminalLoaded = loadScript('/console/vendor/xterm.js')
        .then(() => loadScript('/console/vendor/addon-fit.js'))
        .then(() => loadScript('/console/term.js'));
    }
    return terminalLoaded;
  }
  pages.terminals = async (p, args) => {
    if (args[0]) {
      await loadTerminal();
      return window.HappyXTerminal.page(p, args[0], { api, h, mount, id, time, badge, bytes, visible, isOperator, toast });
    }
    const draw = async () => {
      const r = await api('GET', '/v1/pty?limit=200');
      mount(p, h('h1', {}, 'Terminals'),
        table(['Terminal', 'Recipe', 'State', 'Owner', 'Size', 'Output', 'Created'],
          r.items.length ? r.items.map((t) => h('tr', {},
            h('td', {}, h('a', { href: '#/terminals/' + t.id, class: 'mono id', title: t.id }, t.id.slice(-12))),
            h('td', {}, visible(t.recipe), ' ', badge('risk', t.risk)), h('td', {}, badge('st', t.state)),
            h('td', {}, id(t.requested_by)), h('td', { class: 'mono' }, t.cols + '×' + t.rows),
            h('td', {}, bytes(t.output_bytes)), h('td', {}, time(t.created_at))))
            : [empty(7, 'No terminals yet.')],
          ['14%', '18%', '10%', '20%', '9%', '11%', '18%']));
    };
    await draw();
    const again = debounce(() => draw().catch(() => {}), 300);
    p.onEvent = (ev) => { if (ev.code.startsWith('pty.')) again(); };
    p.refresh = again;
  };

  // ---------- Audit log ----------
  pages.audit = async (p) => {
    const txt = (name, label, ph) => h('label', {}, label, h('input', { name, type: 'text', placeholder: ph, autocomplete: 'off' }));
    const dt = (name, label) => h('label', {}, label, h('input', { name, type: 'datetime-local' }));
    const tail = h('input', { type: 'checkbox', id: 'tail', checked: true });
    const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter events' },
      txt('code', 'Kind', 'run. or run.created'), txt('actor', 'Actor', 'token:…'), dt('since', 'From'), dt('until', 'Until'),
      h('button', { type: 'submit' }, 'Filter'),
      h('span', { class: 'row' }, tail, h('label', { for: 'tail', style: null }, 'Live tail')));
    const body = h('tbody');
    const more = h('button', { type: 'button', hidden: true }, 'Older events');
    let oldest = null;
    const filters = () => {
      const f = {};
      for (const [k, v] of new FormData(form)) {
        if (!v) continue;
        f[k] = (k === 'since' || k === 'until') ? String(new Date(v).getTime()) : v;
      }
      return f;
    };
    const matches = (ev) => {
      const f = filters();
      if (f.code && !(f.code.endsWith('.') ? ev.code.startsWith(f.code) : ev.code === f.code)) return false;
      if (f.actor && ev.actor !== f.actor) return false;
      if (f.since && ev.at < Number(f.since)) return false;
      if (f.until && ev.at >= Number(f.until)) return false;
      return true;
    };
    const row = (e) => h('tr', {},
      h('td', { class: 'mono vol' }, String(e.seq)), h('td', {}, time(e.at)), h('td', { class: 'mono' }, visible(e.code)),
      h('td', {}, id(e.actor)), h('td', {}, id(e.subject)),
      h('td', { class: 'mono hide-narrow', title: JSON.stringify(e.data) }, h('span', { class: 'vol' }, visible(JSON.stringify(e.data)))));
    const load = async (older) => {
      const u = new URLSearchParams({ order: 'desc', limit: '100', ...filters() });
      if (older && oldest) u.set('before', String(oldest));
      const r = await api('GET', '/v1/events?' + u);
      if (!older) body.replaceChildren();
      const items = r.events;
      if (items.length) oldest = items[items.length - 1].seq;
      more.hidden = items.length < 100;
      body.append(...items.map(row));
      if (!body.children.length) body.append(empty(6, 'No events match.'));
    };
    form.addEventListener('submit', (e) => { e.preventDefault(); load(false).catch((x) => toast(x.message)); });
    more.addEventListener('click', () => load(true).catch((x) => toast(x.message)));
    await load(false);
    const t = table(['Seq', 'Time', 'Kind', 'Actor', 'Subject', 'Data'], [], ['8%', '12%', '17%', '17%', '17%', '29%']);
    t.querySelector('tbody').replaceWith(body);
    mount(p, h('h1', {}, 'Audit log'), form, t, h('div', { class: 'row' }, more));
    p.refresh = () => { if (tail.checked) load(false).catch(() => {}); };
    p.onEvent = (ev) => {
      if (!tail.checked || !matches(ev)) return;
      const first = body.firstElementChild;
      if (first && first.querySelector('td[colspan]')) first.remove();
      body.prepend(row(ev));
      while (body.children.length > 500) body.lastElementChild.remove();
    };
  };

  // ---------- Devices ----------
  pages.devices = async (p) => {
    const codeBox = h('div');
    const draw = async () => {
      const r = await api('GET', '/v1/devices');
      const rows = r.items.map((d) => {
        const keys = (d.keys || []).map((k) => h('div', {}, 'v' + k.key_version + ' ', h('span', { class: 'mono id', title: k.fingerprint }, k.fingerprint),
          k.revoked_at ? h('span', { class: 'muted' }, ' revoked') : null));
        let act = null;
        if (isOperator() && d.status !== 'revoked') {
          const reason = h('input', { type: 'text', maxlength: '500', id: 'revoke-' + d.id, autocomplete: 'off' });
          const go = h('button', {
            type: 'button', class: 'danger', onclick: async () => {
              if (!reason.value.trim()) { reason.focus(); toast('Give a reason for the revocation.'); return; }
              try { await api('POST', '/v1/devices/' + encodeURIComponent(d.id) + '/revoke', { reason: reason.value.trim() }); toast('Device revoked'); draw(); } catch (x) { toast(x.message); }
            },
          }, 'Revoke');
          act = h('div', { class: 'row' }, h('label', { for: reason.id }, 'Reason', reason), go);
        }
        return h('tr', {},
          h('td', {}, id(d.id)), h('td', {}, visible(d.name || '—')), h('td', {}, badge('st', d.status)),
          h('td', { class: 'wrap' }, keys.length ? keys : '—'), h('td', {}, time(d.created_at)),
          h('td', { class: 'wrap' }, d.revoked_at ? [time(d.revoked_at), ' ', visible(d.revoke_reason || '')] : act || '—'));
      });
      mount(p, h('h1', {}, 'Devices'),
        isOperator() ? h('div', { class: 'row' }, h('button', { type: 'button', class: 'primary', onclick: enroll }, 'Create enrollment code')) : null,
        codeBox,
        table(['Device', 'Name', 'Status', 'Keys (fingerprint)', 'Enrolled', 'Revoked / revoke'], rows.length ? rows : [empty(6, 'No devices enrolled.')],
          ['14%', '12%', '9%', '30%', '11%', '24%']));
    };
    const enroll = async () => {
      try {
        const e = await api('POST', '/v1/enrollments', {});
        codeBox.replaceChildren(h('div', { class: 'note', role: 'status' },
          h('p', {}, 'Enrollment code — shown once, single use, expires ', time(e.expires_at), ' (', abs(e.expires_at), '):'),
          h('div', { class: 'secret-box' }, e.code),
          h('p', {}, 'Enroll with: ', h('code', {}, 'happyx device enroll --dir DIR --url URL --code CODE'))));
      } catch (x) { toast(x.message); }
    };
    await draw();
    const again = debounce(() => draw().catch(() => {}), 300);
    p.onEvent = (ev) => { if (ev.code.startsWith('device.')) again(); };
    p.refresh = again;
  };

  // ---------- Plugins ----------
  pages.plugins = async (p) => {
    const msg = h('div', { role: 'status' });
    const draw = async () => {
      const r = await api('GET', '/v1/plugins');
      mount(p, h('h1', {}, 'Plugins'),
        isOperator() ? h('div', { class: 'row' }, h('button', {
          type: 'button', onclick: async (e) => {
            e.currentTarget.disabled = true;
            try { await api('POST', '/v1/plugins/reload'); msg.replaceChildren(h('p', { class: 'note' }, 'Reloaded.')); } catch (x) { msg.replaceChildren(h('p', { class: 'note bad' }, 'Reload failed: ', x.message)); }
            draw();
          },
        }, 'Reload plugins')) : null,
        msg, pluginTable(r, true));
    };
    await draw();
    p.onEvent = (ev) => { if (ev.code.startsWith('plugins.')) draw().catch(() => {}); };
    p.refresh = () => draw().catch(() => {});
  };

  // ---------- boot ----------
  $('#sign-out').addEventListener('click', signOut);
  window.HappyX = { h, visible, api, time, id, badge, bytes };
  (async () => {
    try {
      me = await api('GET', '/v1/console/session');
      start();
    } catch (_) {
      showSignIn('');
    }
  })();
})();
