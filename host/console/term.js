// HappyX console: one terminal's page. Live attach over the PTY WebSocket with
// xterm.js (observe or drive), resize following the window, resume from the
// byte offset after a dropped connection, transcript playback and asciicast v2
// download for finished terminals. Loaded on demand after vendor/xterm.js.
'use strict';

(() => {
  // xterm.js injects <style> elements, which the console's CSP (style-src
  // 'self') refuses. Mirror their text into constructable stylesheets, which
  // the CSP allows, so the terminal renders without weakening the policy.
  function mirrorStyles() {
    const sheets = new Map();
    const sync = () => {
      for (const el of document.querySelectorAll('style')) {
        let sh = sheets.get(el);
        if (!sh) {
          sh = new CSSStyleSheet();
          sheets.set(el, sh);
          document.adoptedStyleSheets = [...document.adoptedStyleSheets, sh];
        }
        const text = el.textContent || '';
        if (sh.mirrored !== text) { sh.replaceSync(text); sh.mirrored = text; }
      }
    };
    const mo = new MutationObserver(sync);
    mo.observe(document.documentElement, { subtree: true, childList: true, characterData: true });
    sync();
    return () => {
      mo.disconnect();
      const mine = new Set(sheets.values());
      document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => !mine.has(s));
    };
  }

  const LIVE = new Set(['starting', 'running']);

  async function page(p, ptyId, c) {
    const { api, h, mount, id, time, badge, bytes, visible, isOperator, toast } = c;
    let t = await api('GET', '/v1/pty/' + encodeURIComponent(ptyId));
    const status = h('div', { class: 'row', role: 'status', 'aria-live': 'polite' });
    const meta = h('dl', { class: 'kv' });
    const box = h('div', { class: 'term-wrap', id: 'terminal', 'aria-label': 'Terminal ' + t.id });
    const controls = h('div', { class: 'row' });
    const drawMeta = () => {
      meta.replaceChildren(
        h('dt', {}, 'State'), h('dd', {}, badge('st', t.state), t.exit_code !== null ? ' exit ' + t.exit_code : '', t.exit_signal ? ' signal ' + t.exit_signal : ''),
        h('dt', {}, 'Recipe'), h('dd', {}, visible(t.recipe), ' ', badge('risk', t.risk)),
        h('dt', {}, 'Owner'), h('dd', {}, id(t.requested_by)),
        h('dt', {}, 'Size'), h('dd', { class: 'mono', id: 'pty-size' }, t.cols + '×' + t.rows),
        h('dt', {}, 'Output'), h('dd', { class: 'vol' }, bytes(t.output_bytes)),
        h('dt', {}, 'Created'), h('dd', {}, time(t.created_at)));
    };
    drawMeta();
    mount(p, h('p', {}, h('a', { href: '#/terminals' }, '← Terminals')),
      h('h1', {}, 'Terminal ', h('span', { class: 'mono vol' }, t.id)), meta, controls, status, box);

    const unmirror = mirrorStyles();
    const term = new window.Terminal({
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace', fontSize: 13,
      scrollback: 5000, cursorBlink: false, convertEol: false,
    });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    try { fit.fit(); } catch (_) { /* not laid out yet */ }

    let ws = null;
    let next = 0; // raw output offset to resume from
    let ended = false;
    let stopped = false;
    let mode = isOperator() ? 'drive' : 'observe';
    let approvalToken = null;
    let retry = null;
    const cast = []; // [seconds, data] for the asciicast download
    const t0 = performance.now();
    const decoder = new TextDecoder();
    box.dataset.offset = '0';

    const say = (...parts) => status.replaceChildren(h('span', {}, ...parts));
    const send = (obj) => { if (ws && ws.readyState === 1 && mode === 'drive') ws.send(JSON.stringify(obj)); };

    term.onData((d) => send({ type: 'input', data: d }));
    term.onResize(({ rows, cols }) => send({ type: 'resize', rows, cols }));
    const onWindowResize = () => { try { fit.fit(); } catch (_) { /* hidden */ } };
    window.addEventListener('resize', onWindowResize);

    async function connect() {
      if (stopped || ended) return;
      let ticket;
      try {
        const body = { mode };
        if (approvalToken) body.approval_token = approvalToken;
        ticket = await api('POST', '/v1/pty/' + encodeURIComponent(t.id) + '/attach', body);
      } catch (x) {
        const code = x.body && x.body.code;
        if (code === 'approval_required') {
          approvalToken = x.body.approval_token;
          say('This terminal is high risk: attaching needs an operator\u2019s approval (', id(x.body.approval_id), '). Waiting…');
          retry = setTimeout(connect, 2000);
        } else if (code === 'approval_pending') {
          retry = setTimeout(connect, 2000);
        } else {
          approvalToken = null;
          say(h('span', { class: 'error' }, 'Cannot attach: ' + x.message));
        }
        return;
      }
      approvalToken = null;
      const url = new URL(ticket.ws_path, location.href);
      url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      url.searchParams.set('ticket', ticket.ticket);
      url.searchParams.set('offset', String(next));
      const sock = new WebSocket(url);
      sock.binaryType = 'arraybuffer';
      ws = sock;
      sock.onmessage = (m) => {
        if (typeof m.data === 'string') {
          let f; try { f = JSON.parse(m.data); } catch (_) { return; }
          if (f.type === 'hello') {
            say('Attached (' + f.mode + ') from byte ' + f.offset + '.');
            if (f.mode === 'drive') send({ type: 'resize', rows: term.rows, cols: term.cols });
          } else if (f.type === 'exit') {
            ended = true;
            say('Terminal ended: ' + f.state + (f.exit_code !== null && f.exit_code !== undefined ? ', exit ' + f.exit_code : '') + (f.signal ? ', signal ' + f.signal : '') + '.');
            refresh();
          } else if (f.type === 'error') {
            toast(f.message || f.code);
          }
          return;
        }
        const dv = new DataView(m.data);
        if (dv.byteLength < 12) return;
        const off = Number(dv.getBigUint64(0));
        const len = dv.getUint32(8);
        if (off + len <= next) return; // already shown: no duplicate
        const data = new Uint8Array(m.data, 12);
        term.write(data);
        cast.push([(performance.now() - t0) / 1000, decoder.decode(data, { stream: true })]);
        next = off + len;
        box.dataset.offset = String(next);
      };
      sock.onclose = () => {
        if (ws !== sock) return;
        ws = null;
        if (!ended && !stopped) {
          say('Connection lost; resuming from byte ' + next + '…');
          retry = setTimeout(connect, 1000);
        }
      };
    }

    async function refresh() {
      try { t = await api('GET', '/v1/pty/' + encodeURIComponent(t.id)); drawMeta(); drawControls(); } catch (_) { /* keep */ }
    }

    function download() {
      const header = { version: 2, width: t.cols, height: t.rows, timestamp: Math.floor(t.created_at / 1000), title: 'HappyX terminal ' + t.id };
      const lines = [JSON.stringify(header)].concat(cast.map(([s, d]) => JSON.stringify([Number(s.toFixed(6)), 'o', d])));
      const blob = new Blob([lines.join('\n') + '\n'], { type: 'application/x-asciicast' });
      const a = h('a', { href: URL.createObjectURL(blob), download: 'happyx-' + t.id + '.cast' });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }

    async function playback() {
      // A finished terminal: the redacted transcript, replayed into the terminal.
      let text;
      if (isOperator()) {
        text = await api('GET', '/v1/pty/' + encodeURIComponent(t.id) + '/transcript');
      } else {
        return connect(); // viewers replay through an observe attach
      }
      term.reset();
      cast.length = 0;
      const chunk = 512;
      let i = 0;
      const step = () => {
        if (stopped) return;
        const part = text.slice(i, i + chunk);
        term.write(part);
        cast.push([i / chunk * 0.02, part]);
        i += chunk;
        if (i < text.length) setTimeout(step, 16); else say('Playback finished (' + text.length + ' characters).');
      };
      step();
    }

    function drawControls() {
      const btns = [];
      if (LIVE.has(t.state)) {
        if (isOperator()) {
          btns.push(h('button', {
            type: 'button', onclick: () => {
              mode = mode === 'drive' ? 'observe' : 'drive';
              if (ws) { const old = ws; ws = null; old.close(); }
              drawControls();
              connect();
            },
          }, mode === 'drive' ? 'Switch to observe' : 'Switch to drive'));
          btns.push(h('button', { type: 'button', onclick: () => api('POST', '/v1/pty/' + encodeURIComponent(t.id) + '/interrupt').catch((x) => toast(x.message)) }, 'Interrupt'));
          btns.push(h('button', { type: 'button', class: 'danger', onclick: () => api('POST', '/v1/pty/' + encodeURIComponent(t.id) + '/kill').catch((x) => toast(x.message)) }, 'Kill'));
        }
        btns.push(h('span', { class: 'muted' }, mode === 'drive' ? 'Driving: keystrokes go to the terminal.' : 'Observing: read only.'));
      } else {
        btns.push(h('button', { type: 'button', onclick: () => playback().catch((x) => toast(x.message)) }, 'Replay'));
      }
      btns.push(h('button', { type: 'button', onclick: download }, 'Download asciicast'));
      controls.replaceChildren(...btns);
    }
    drawControls();

    if (LIVE.has(t.state)) {
      await connect();
      term.focus();
    } else {
      ended = true;
      await playback();
    }
    window.HappyXTerminalDebug = { drop: () => { if (ws) ws.close(); }, offset: () => next, term };
    p.stop = () => {
      stopped = true;
      clearTimeout(retry);
      if (ws) { const old = ws; ws = null; old.close(); }
      window.removeEventListener('resize', onWindowResize);
      term.dispose();
      unmirror();
    };
    p.onEvent = (ev) => { if (ev.subject === t.id && ev.code.startsWith('pty.')) refresh(); };
  }

  window.HappyXTerminal = { page };
})();
