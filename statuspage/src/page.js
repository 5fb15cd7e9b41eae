// Meridian status page: refreshes live cells from /status.json, fetches the page again when its
// shape changes, posts the buttons' actions, and asks for the admin token off loopback.
(() => {
  const KEY = 'meridian-admin-token';
  const period = Number(document.body.dataset.refresh) || 2000;
  const login = document.getElementById('login');
  const stamp = document.getElementById('updated');
  const auth = () => {
    const t = sessionStorage.getItem(KEY);
    return t ? { Authorization: 'Bearer ' + t } : {};
  };
  const say = (text, bad) => { stamp.textContent = text; stamp.className = bad ? 'bad' : ''; };
  async function get(url, init) {
    const r = await fetch(url, Object.assign({ headers: auth(), cache: 'no-store' }, init || {}));
    if (r.status === 401) { login.hidden = false; throw new Error('admin token needed'); }
    return r;
  }
  async function reshape() {
    const r = await get(location.pathname);
    const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
    document.getElementById('main').replaceWith(doc.getElementById('main'));
    login.hidden = true;
  }
  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const r = await get('/status.json');
      if (!r.ok) throw new Error('status ' + r.status);
      const s = await r.json();
      const main = document.getElementById('main');
      if (s.shape !== main.dataset.shape) {
        await reshape();
      } else {
        for (const el of main.querySelectorAll('[data-f]')) {
          const c = s.cells[el.dataset.f];
          if (!c) continue;
          if (el.textContent !== c[0]) el.textContent = c[0];
          if (el.tagName !== 'BUTTON') el.className = c[1] === 'plain' ? '' : c[1];
        }
      }
      say('updated ' + new Date().toLocaleTimeString(), false);
    } catch (e) {
      say('not updated: ' + e.message, true);
    } finally {
      busy = false;
    }
  }
  document.addEventListener('click', async (ev) => {
    const b = ev.target.closest('button[data-post]');
    if (!b) return;
    b.disabled = true;
    try {
      const r = await get(b.dataset.post + b.textContent.trim(), { method: 'POST' });
      if (!r.ok) throw new Error((await r.json()).error || 'status ' + r.status);
      await refresh();
    } catch (e) {
      say(e.message, true);
    } finally {
      b.disabled = false;
    }
  });
  login.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, login.elements.token.value);
    reshape().then(refresh).catch((e) => say(e.message, true));
  });
  if (!login.hidden && sessionStorage.getItem(KEY)) reshape().catch((e) => say(e.message, true));
  setInterval(refresh, period);
})();
