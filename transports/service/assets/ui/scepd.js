// scepd admin GUI: SCEP Administration (Profiles, Intune Monitoring, Recent Activity, Certificates).
//
// Everything shown comes from the admin API (/api/v1/admin/scep/..., docs/admin-api.md),
// read with the admin key the operator signs in with. The page is built with DOM calls and
// text nodes only: no HTML is ever parsed from data (the Content-Security-Policy forbids
// inline script, and ui.rs's tests forbid HTML sinks in this file).
'use strict';

(() => {
  const API = '/api/v1/admin/scep';
  const HOME = '/ui/scep';
  const KEY_STORE = 'scepd.adminKey';
  const TABS = ['profiles', 'intune', 'activity', 'certificates'];
  // The spec's polling periods for the Intune Monitoring tab.
  const STATS_EVERY_MS = 30_000;
  const FAILURES_EVERY_MS = 60_000;
  const FAILURE_ACTIONS = 'scep_pkcsreq_intune,scep_renewalreq_intune';
  const FAILURES_SHOWN = 50;

  // The counters in the spec's order: success first, then the failure modes.
  const COUNTERS = [
    ['success', 'Challenges accepted.'],
    ['malformed', 'Challenge bytes that do not parse: often a proxy mangling the request.'],
    ['signature_invalid', 'Not signed by a trust anchor in force: reload the anchors after a Connector rotation.'],
    ['unknown_version', 'A Connector challenge version this server does not understand.'],
    ['not_yet_valid', "Issued in the future: this server's clock is behind the Connector's (NTP)."],
    ['expired', "Past its validity: clock skew, or the Connector's certificate expired."],
    ['wrong_audience', 'intune_audience does not match the URL the Connector calls.'],
    ['claim_mismatch', "The CSR's subject or SANs differ from the challenge's claims."],
    ['replay', 'A challenge presented a second time.'],
    ['rate_limited', 'A device over intune_per_device_rate_limit_24h.'],
    ['compliance_failed', 'Refused by the compliance check.'],
    ['replay_cache_full', 'No free slot in the replay cache: raise intune_replay_capacity.'],
  ];

  const $ = (id) => document.getElementById(id);

  /** An element with attributes and children; strings become text nodes, never HTML. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function badge(text, cls) {
    return el('span', { class: cls ? `badge ${cls}` : 'badge' }, text);
  }

  /** A certificate's expiry badge; `status` is the API's (green, amber, red, expired). */
  function expiryBadge(c) {
    if (c.expired || c.status === 'expired') return badge('EXPIRED', 'expired');
    const days = c.days_to_expiry;
    return badge(`${days} ${days === 1 ? 'day' : 'days'} left`, c.status);
  }

  function row(term, ...value) {
    return [el('dt', {}, term), el('dd', {}, ...value)];
  }

  function duration(secs) {
    if (secs % 86400 === 0) return `${secs / 86400} d`;
    if (secs % 3600 === 0) return `${secs / 3600} h`;
    if (secs % 60 === 0) return `${secs / 60} min`;
    return `${secs} s`;
  }

  function meter(used, capacity) {
    const pct = capacity > 0 ? Math.min(100, (100 * used) / capacity) : 0;
    const bar = el('span');
    bar.style.width = `${pct}%`; // CSSOM, not a style attribute: allowed by the policy.
    return el('div', { class: pct >= 80 ? 'meter high' : 'meter', title: `${pct.toFixed(1)}% full` }, bar);
  }

  function empty(node) {
    node.replaceChildren();
    return node;
  }

  // ---- The admin API -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, init = {}) {
    const key = sessionStorage.getItem(KEY_STORE);
    if (!key) throw new ApiError(401, 'unauthorized', 'Sign in with an admin API key.');
    const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
    if (init.body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { ...init, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' });
    } catch (e) {
      throw new ApiError(0, 'network', `scepd did not answer (${e.message}).`);
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      // Not JSON: described by the status below.
    }
    if (!res.ok) {
      throw new ApiError(res.status, body?.error ?? `http_${res.status}`, body?.message ?? `HTTP ${res.status}`);
    }
    return body;
  }

  // ---- Screens: sign-in, forbidden, the app --------------------------------------------

  let generation = 0; // Bumped on every render: answers for an older view are dropped.
  let timers = [];
  let errorFrom = null; // The request whose failure the banner shows.
  let knownProfiles = []; // Profile names, for the activity filter.

  function stopTimers() {
    timers.forEach(clearInterval);
    timers = [];
  }

  function showOnly(id) {
    for (const s of ['sign-in', 'forbidden', 'app']) $(s).hidden = s !== id;
    $('session').hidden = id === 'sign-in';
  }

  /** Forgets everything the last key was shown, so the next key never sees it. */
  function forget() {
    generation++;
    stopTimers();
    sessionStorage.removeItem(KEY_STORE);
    for (const d of ['reload-dialog', 'certificate-dialog']) if ($(d).open) $(d).close();
    for (const id of ['profile-cards', 'intune-cards', 'certificate-fields', 'certificate-history']) empty($(id));
    $('certificate-pem').textContent = '';
    for (const id of ['failures', 'activity', 'certificates']) empty($(id).tBodies[0]);
    destroyCharts();
    knownProfiles = [];
    errorFrom = null;
    for (const id of ['error', 'toast']) $(id).hidden = true;
  }

  function signOut(message) {
    forget();
    showOnly('sign-in');
    $('sign-in-error').hidden = !message;
    $('sign-in-error').textContent = message || '';
    $('api-key').value = '';
    $('api-key').focus();
  }

  function showError(message, from) {
    errorFrom = from;
    $('error').textContent = message;
    $('error').hidden = false;
  }

  function toast(message) {
    $('toast').textContent = message;
    $('toast').hidden = false;
    setTimeout(() => {
      if ($('toast').textContent === message) $('toast').hidden = true;
    }, 8000);
  }

  /**
   * Routes an API failure: 401 signs out, 403 forgets the key and hides the page, anything
   * else is shown in the banner (`from` names the request, so its next success clears it).
   */
  function failed(err, from) {
    if (err.status === 401) {
      signOut(`The key was not accepted: ${err.message}`);
    } else if (err.status === 403) {
      forget();
      $('forbidden-message').textContent = `${err.message} SCEP Administration needs a key with the admin role.`;
      showOnly('forbidden');
    } else {
      showError(err.message, from);
    }
  }

  function stamp() {
    $('updated').textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC`;
  }

  // ---- Routing: /ui/scep?tab=..., /ui/scep/intune ---------------------------------------

  function currentView() {
    const url = new URL(location.href);
    let tab = url.searchParams.get('tab');
    if (!tab) tab = url.pathname.replace(/\/$/, '').endsWith('/intune') ? 'intune' : 'profiles';
    if (!TABS.includes(tab)) tab = 'profiles';
    return { tab, params: url.searchParams };
  }

  function navigate(search) {
    history.pushState(null, '', HOME + search);
    render();
  }

  async function render() {
    const mine = ++generation;
    stopTimers();
    const { tab, params } = currentView();
    // The app is shown by the first answer the API gives this key (see `fetching`), never
    // before: a key the server refuses sees nothing of it.
    for (const t of TABS) {
      if (t === tab) $(`tab-${t}`).setAttribute('aria-current', 'page');
      else $(`tab-${t}`).removeAttribute('aria-current');
      $(`view-${t}`).hidden = t !== tab;
    }
    $('error').hidden = true;
    errorFrom = null;
    const views = { profiles: loadProfiles, intune: loadIntune, activity: loadActivity, certificates: loadCertificates };
    await views[tab](params, mine);
    if (mine !== generation) return;
    if (tab === 'intune') {
      timers.push(setInterval(() => loadStats(params, generation), STATS_EVERY_MS));
      timers.push(setInterval(() => loadFailures(params, generation), FAILURES_EVERY_MS));
    }
  }

  /**
   * GETs `path` and shows the answer with `show`, unless the view changed meanwhile. On a
   * failure, `clear` (when given) empties what would otherwise show stale data.
   */
  async function fetching(mine, path, show, clear) {
    const from = path.split('?')[0];
    try {
      const body = await api(path);
      if (mine !== generation) return;
      if ($('app').hidden) showOnly('app');
      show(body);
      if (errorFrom === from) {
        errorFrom = null;
        $('error').hidden = true;
      }
      stamp();
    } catch (err) {
      if (mine !== generation) return;
      if (clear && err.status !== 401 && err.status !== 403) clear(err);
      failed(err, from);
    }
  }

  // ---- Profiles -------------------------------------------------------------------------

  function certSummary(c) {
    if (!c) return badge('unreadable', 'red');
    return [c.subject, el('br'), `expires ${c.not_after} `, expiryBadge(c)];
  }

  function mtlsSummary(m) {
    if (!m || !m.enabled) return badge('off');
    return [
      badge('on', 'on'), ' ', el('code', {}, m.url_path), el('br'),
      'trust bundle ', el('code', {}, m.trust_bundle_path),
      m.earliest_expiry ? [el('br'), `earliest expiry ${m.earliest_expiry} `, expiryBadge(m)] : null,
    ];
  }

  function policySummary(p) {
    const parts = [`validity ${duration(p.validity_secs)}`, `RSA ≥ ${p.min_rsa_bits} bits`];
    const ec = [p.allow_ec_p256 && 'P-256', p.allow_ec_p384 && 'P-384'].filter(Boolean);
    parts.push(ec.length ? `EC ${ec.join(', ')}` : 'no EC keys');
    parts.push(p.renewal ? 'renewal allowed' : 'no renewal');
    return parts.join(' · ');
  }

  // The RA certificates: one RA, or NDES's pair (signing RA + encryption RA).
  function raRows(p) {
    const ra = p.ra;
    if (!ra || ra.arrangement !== 'ndes-pair') return [row('RA certificate', certSummary(p.ra_cert))];
    return [
      row('Signing RA certificate', certSummary(ra.signing)),
      ...ra.encryption.map((c) => row('Encryption RA certificate', certSummary(c))),
    ];
  }

  function profileCard(p) {
    const api = p.challenge_mode === 'intune-api';
    const intune = (p.intune && p.intune.enabled) || api;
    return el('article', { class: 'card', 'data-profile': p.path_id },
      el('header', {},
        el('h3', {}, p.path_id),
        p.default ? badge('default', 'on') : null,
        api ? badge('Intune API mode', 'on') : intune ? badge('Intune enabled', 'on') : badge('Intune disabled'),
        api ? null : p.challenge_mode === 'one-time' ? badge('one-time challenges', 'on')
          : p.challenge_password_set ? badge('challenge password set', 'on') : badge('no challenge password')),
      el('dl', {},
        row('SCEP URL', el('code', {}, location.origin + p.url_path)),
        (p.url_aliases && p.url_aliases.length)
          ? row('URL aliases', p.url_aliases.flatMap((a, i) => [i ? el('br') : null, el('code', {}, location.origin + a)]))
          : null,
        row('Issuer', p.issuer_id),
        ...raRows(p),
        row('CA certificate', certSummary(p.ca_cert)),
        row('mTLS route', mtlsSummary(p.mtls)),
        row('Policy', policySummary(p.policy))),
      intune || p.challenge_mode === 'one-time' ? el('div', { class: 'footer' },
        p.challenge_mode === 'one-time'
          ? el('button', { type: 'button', class: 'new-challenge', onclick: () => openChallenge(p.path_id) },
            'New challenge') : null,
        intune ? el('a', { href: `${HOME}?tab=intune&profile=${encodeURIComponent(p.path_id)}`, class: 'nav' },
          'View Intune details →') : null) : null);
  }

  // One-time challenges: a small form, then the minted challenge shown once with a copy button.
  let challengeProfile = null;
  let challengeBusy = false;

  function openChallenge(profile) {
    challengeProfile = profile;
    $('challenge-profile-text').textContent = `A challenge that enrols one device on profile ${profile}, once.`;
    $('challenge-inputs').hidden = false;
    $('challenge-result').hidden = true;
    $('challenge-error').hidden = true;
    $('challenge-value').textContent = '';
    $('challenge-mint').hidden = false;
    $('challenge-ttl').value = '60';
    $('challenge-cn').value = '';
    $('challenge-sans').value = '';
    $('challenge-dialog').showModal();
  }

  async function mintChallenge(event) {
    event.preventDefault();
    if (challengeBusy) return;
    const minutes = Number($('challenge-ttl').value);
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 10080) {
      $('challenge-error').textContent = 'Valid for: a whole number of minutes from 1 to 10080 (7 days).';
      $('challenge-error').hidden = false;
      return;
    }
    const body = { profile: challengeProfile, ttl_secs: minutes * 60 };
    const cn = $('challenge-cn').value.trim();
    if (cn) body.common_name = cn;
    const sans = $('challenge-sans').value.split(',').map((s) => s.trim()).filter(Boolean);
    if (sans.length) body.subject_alt_names = sans;
    challengeBusy = true;
    $('challenge-mint').disabled = true;
    $('challenge-error').hidden = true;
    try {
      const minted = await api(`${API}/challenges`, { method: 'POST', body: JSON.stringify(body) });
      $('challenge-value').textContent = minted.challenge;
      $('challenge-expires').textContent = minted.expires_at;
      $('challenge-inputs').hidden = true;
      $('challenge-mint').hidden = true;
      $('challenge-result').hidden = false;
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        $('challenge-dialog').close();
        failed(err);
        return;
      }
      $('challenge-error').textContent = err.message;
      $('challenge-error').hidden = false;
    } finally {
      challengeBusy = false;
      $('challenge-mint').disabled = false;
    }
  }

  async function copyChallenge() {
    const value = $('challenge-value').textContent;
    try {
      await navigator.clipboard.writeText(value);
      toast('Challenge copied.');
    } catch {
      // No clipboard permission (e.g. plain HTTP): select it for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents($('challenge-value'));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      toast('Press Ctrl+C to copy the selected challenge.');
    }
  }

  function loadProfiles(_params, mine) {
    return fetching(mine, `${API}/profiles`, (body) => {
      knownProfiles = body.profiles.map((p) => p.path_id);
      empty($('profile-cards')).append(...body.profiles.map(profileCard));
    }, () => empty($('profile-cards')));
  }

  // ---- Intune Monitoring ----------------------------------------------------------------

  function anchorItem(a) {
    return el('li', {}, expiryBadge(a), el('span', {}, a.subject), el('span', { class: 'muted' },
      `${a.key === 'rsa' ? 'RS256' : 'ES256'} · until ${a.not_after}`));
  }

  function counterGrid(counters) {
    // A label this page does not know yet (a newer server) is shown after the known ones.
    const known = new Set(COUNTERS.map(([label]) => label));
    const extra = Object.keys(counters).filter((label) => !known.has(label)).sort().map((label) => [label, '']);
    return el('div', { class: 'counters' }, [...COUNTERS, ...extra].map(([label, hint]) => {
      const n = counters[label] ?? 0;
      const cls = label === 'success' ? 'counter success' : n > 0 ? 'counter failing' : 'counter';
      return el('div', { class: cls, title: hint || null, 'data-counter': label },
        el('div', { class: 'n' }, n.toLocaleString('en-US')), el('div', { class: 'label' }, label));
    }));
  }

  /** One hop's last result (`intune/stats` of an API-mode profile). */
  function hopResult(r) {
    if (!r || !r.calls) return el('span', { class: 'muted' }, 'not called yet');
    const ok = r.last === 'ok';
    return [badge(ok ? 'ok' : 'failed', ok ? 'green' : 'red'),
      ` ${r.calls.toLocaleString('en-US')} ${r.calls === 1 ? 'call' : 'calls'} · last ${r.last_ms} ms · mean ${Math.round(r.total_ms / r.calls)} ms`,
      ok ? null : el('div', { class: 'muted' }, r.last)];
  }

  /** Gate 9 (either mode): its kind, counts, results by kind and last decision. */
  function complianceRow(c) {
    if (!c) return row('Compliance gate', el('span', { class: 'muted', 'data-compliance': 'off' }, 'off'));
    const results = Object.entries(c.results).map(([kind, n]) => `${kind} ${n}`).join(', ');
    return row('Compliance gate', el('span', { 'data-compliance': c.check },
      `${c.check}: ${c.allowed} allowed, ${c.refused} refused`, results ? ` (${results})` : null,
      c.last ? el('div', { class: 'muted' }, `last: ${c.last}`) : null));
  }

  function revocationSync(s) {
    if (!s.revocation_poll_interval_secs) return 'off';
    const every = `every ${duration(s.revocation_poll_interval_secs)}`;
    const sync = s.revocation_last_sync;
    if (!sync) return `${every}; not run yet`;
    const at = new Date(sync.at * 1000).toISOString();
    if (sync.error) return [badge('failed', 'red'), ` ${every}; last round ${at}: `, el('span', {}, sync.error)];
    return `${every}; last round ${at}: ${sync.requests} requests, ${sync.revoked} revoked`;
  }

  /** A profile in Intune API mode (Microsoft's SCEP validation API). */
  function apiCard(s) {
    const st = s.stats;
    const codeRows = Object.entries(st.codes).flatMap(([action, codes]) =>
      Object.entries(codes).map(([code, n]) => el('tr', { 'data-action': action, 'data-code': code },
        el('td', {}, action), el('td', { class: 'mono' }, code), el('td', {}, n.toLocaleString('en-US')))));
    return el('article', { class: 'card', 'data-profile': s.path_id, 'data-mode': 'api' },
      el('header', {}, el('h3', {}, s.path_id), badge('Intune API mode', 'on')),
      el('dl', {},
        row('Tenant', el('code', {}, s.tenant_id)),
        row('Application', el('code', {}, s.client_id),
          s.credential === 'client_assertion' ? ' (certificate credential)' : ' (client secret)'),
        row('Entra token', el('span', { 'data-hop': 'token' }, hopResult(st.token))),
        row('Graph discovery', el('span', { 'data-hop': 'discovery' }, hopResult(st.discovery))),
        Object.entries(st.actions).map(([action, r]) => row(action, el('span', { 'data-hop': action }, hopResult(r)))),
        row('Certificate returned', s.return_before_notification
          ? 'without waiting for Intune\'s answer to successNotification' : 'after Intune answers successNotification'),
        row('Revocation sync', el('span', { 'data-revocation': '' }, revocationSync(s))),
        complianceRow(s.compliance)),
      codeRows.length
        ? el('table', { class: 'codes' },
          el('thead', {}, el('tr', {}, el('th', {}, 'Call'), el('th', {}, 'Intune code'), el('th', {}, 'Seen'))),
          el('tbody', {}, codeRows))
        : el('p', { class: 'muted' }, 'No Intune calls yet.'));
  }

  function intuneCard(s) {
    if (s.enabled && s.mode === 'api') return apiCard(s);
    if (!s.enabled) {
      return el('article', { class: 'card', 'data-profile': s.path_id },
        el('header', {}, el('h3', {}, s.path_id), badge('Intune disabled')),
        el('p', { class: 'muted' }, 'This profile validates no Intune challenges.'));
    }
    const anchors = [...s.trust_anchors].sort((a, b) => a.days_to_expiry - b.days_to_expiry);
    const rl = s.rate_limit;
    return el('article', { class: 'card', 'data-profile': s.path_id },
      el('header', {}, el('h3', {}, s.path_id), badge('Intune enabled', 'on'),
        anchors.length ? [el('span', { class: 'muted' }, 'trust anchors'), expiryBadge(anchors[0])] : badge('no anchors', 'red')),
      el('dl', {},
        row('Trust anchors', el('ul', { class: 'anchors' }, anchors.map(anchorItem))),
        row('Connector bundle', el('code', {}, s.trust_bundle_path)),
        row('Audience', s.audience ? el('code', {}, s.audience) : el('span', { class: 'muted' }, 'not checked')),
        row('Challenge validity', `${duration(s.challenge_validity_secs)} (clock skew ±${duration(s.clock_skew_tolerance_secs)})`),
        row('Rate limit', rl.per_device_rate_limit_24h > 0
          ? [`${rl.per_device_rate_limit_24h} per device per ${duration(rl.window_secs)}; `,
            `${rl.devices_tracked.toLocaleString('en-US')} devices tracked of ${rl.capacity.toLocaleString('en-US')}`,
            meter(rl.devices_tracked, rl.capacity)]
          : 'off'),
        row('Replay cache', [`${s.replay_cache_entries.toLocaleString('en-US')} of ${s.replay_cache_capacity.toLocaleString('en-US')} nonces`,
          meter(s.replay_cache_entries, s.replay_cache_capacity)]),
        complianceRow(s.compliance)),
      counterGrid(s.counters),
      el('div', { class: 'footer' },
        el('button', { type: 'button', class: 'secondary reload', onclick: () => openReload(s) }, 'Reload trust anchors')));
  }

  function profileFilter(params) {
    const p = params.get('profile');
    return p && /^[a-z0-9-]{1,64}$/.test(p) ? p : null;
  }

  function loadStats(params, mine) {
    const only = profileFilter(params);
    return fetching(mine, `${API}/intune/stats`, (body) => {
      const shown = body.profiles.filter((p) => !only || p.path_id === only);
      const filter = $('intune-filter');
      filter.hidden = !only;
      if (only) {
        empty(filter).append(`Showing profile ${only}. `,
          el('a', { href: `${HOME}?tab=intune`, class: 'nav' }, 'Show every profile'));
      }
      empty($('intune-cards')).append(...shown.map(intuneCard));
      if (!shown.length) $('intune-cards').append(el('p', { class: 'muted' }, only ? `No profile named ${only}.` : 'No profiles.'));
    }, () => empty($('intune-cards')));
  }

  function loadFailures(params, mine) {
    const q = new URLSearchParams({ action: FAILURE_ACTIONS, exclude_outcome: 'success', limit: String(FAILURES_SHOWN) });
    const only = profileFilter(params);
    if (only) q.set('profile', only);
    return fetching(mine, `${API}/events?${q}`, (body) => {
      const rows = body.events.map((e) => el('tr', { 'data-id': e.id },
        el('td', { class: 'time' }, e.time),
        el('td', {}, e.profile),
        el('td', {}, e.message_type ?? e.action),
        el('td', {}, badge(e.outcome, 'red')),
        el('td', { class: 'mono' }, e.intune_subject ?? ''),
        el('td', {}, e.subject ?? ''),
        el('td', { class: 'mono' }, e.intune_issuer ?? ''),
        el('td', { class: 'mono' }, e.client_addr ?? ''),
        el('td', {}, e.detail ?? '')));
      empty($('failures').tBodies[0]).append(...rows);
      $('failures').hidden = !rows.length;
      $('failures-empty').textContent = 'No refused Intune requests in the audit log.';
      $('failures-empty').hidden = rows.length > 0;
    }, (err) => {
      empty($('failures').tBodies[0]);
      $('failures').hidden = true;
      $('failures-empty').textContent = `The audit log cannot be read: ${err.message}`;
      $('failures-empty').hidden = false;
    });
  }

  function loadIntune(params, mine) {
    return Promise.all([loadStats(params, mine), loadFailures(params, mine)]);
  }

  // The trust anchor reload: confirm in a modal; a failed reload keeps the modal open with the
  // server's reason (the old anchors stay in force), so the operator can fix the file and retry.
  let reloading = null;

  function openReload(s) {
    reloading = s.path_id;
    $('reload-text').textContent =
      `Re-read ${s.trust_bundle_path} and replace the Connector trust anchors of profile ${s.path_id}?`;
    $('reload-error').hidden = true;
    setReloadBusy(false);
    $('reload-dialog').showModal();
  }

  let reloadBusy = false;

  function setReloadBusy(busy) {
    reloadBusy = busy;
    $('reload-confirm').disabled = busy;
    $('reload-cancel').disabled = busy;
  }

  async function confirmReload(event) {
    event.preventDefault();
    if (reloadBusy) return;
    const id = reloading;
    setReloadBusy(true);
    $('reload-error').hidden = true;
    try {
      const body = await api(`${API}/intune/reload-trust`, { method: 'POST', body: JSON.stringify({ path_id: id }) });
      setReloadBusy(false);
      $('reload-dialog').close();
      const n = body.trust_anchors.length;
      toast(`Reloaded the trust anchors of ${id}: ${n} ${n === 1 ? 'certificate' : 'certificates'} in force.`);
      const { params } = currentView();
      await loadStats(params, generation);
    } catch (err) {
      setReloadBusy(false);
      if (err.status === 401 || err.status === 403) {
        failed(err);
        return;
      }
      $('reload-error').textContent = `${err.message}`;
      $('reload-error').hidden = false;
    }
  }

  // ---- Recent Activity ------------------------------------------------------------------

  const ACTIVITY_FILTERS = ['profile', 'action', 'outcome', 'since', 'limit'];

  /** datetime-local (read as UTC) to RFC 3339, and back. */
  function toRfc3339(local) {
    return local.length === 16 ? `${local}:00Z` : `${local}Z`;
  }
  function fromRfc3339(t) {
    return t.replace(/Z$/, '');
  }

  function fillActivityForm(params) {
    const profile = $('f-profile');
    const chosen = params.get('profile') ?? '';
    const names = [...new Set([...knownProfiles, chosen].filter(Boolean))].sort();
    empty(profile).append(el('option', { value: '' }, 'any'), ...names.map((n) => el('option', { value: n }, n)));
    profile.value = chosen;
    $('f-action').value = params.get('action') ?? '';
    $('f-outcome').value = params.get('outcome') ?? '';
    const since = params.get('since');
    $('f-since').value = since && /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?Z$/.test(since) ? fromRfc3339(since) : '';
    $('f-limit').value = ['50', '100', '500', '1000'].includes(params.get('limit')) ? params.get('limit') : '100';
  }

  function activityRows(events) {
    const rows = [];
    for (const e of events) {
      const ok = e.outcome === 'success';
      const details = el('tr', { class: 'details', hidden: true },
        el('td', { colspan: 13 }, el('pre', {}, JSON.stringify(e, null, 2))));
      const toggle = el('button', {
        type: 'button', class: 'link', 'aria-expanded': 'false',
        onclick: () => {
          details.hidden = !details.hidden;
          toggle.setAttribute('aria-expanded', String(!details.hidden));
          toggle.textContent = details.hidden ? 'details' : 'hide';
        },
      }, 'details');
      rows.push(el('tr', { 'data-id': e.id },
        el('td', { class: 'time' }, e.time),
        el('td', {}, e.profile),
        el('td', {}, e.action),
        el('td', {}, badge(e.outcome, ok ? 'green' : 'red')),
        el('td', {}, e.http_status),
        el('td', {}, e.pki_status ?? ''),
        el('td', {}, e.fail_info ?? ''),
        el('td', {}, e.subject ?? ''),
        el('td', { class: 'mono' }, e.serial ?? ''),
        el('td', { class: 'mono' }, e.client_addr ?? ''),
        el('td', { class: 'mono' }, e.node ?? ''),
        el('td', {}, e.count > 1 ? `×${e.count}` : '1'),
        el('td', {}, toggle)), details);
    }
    return rows;
  }

  async function loadActivity(params, mine) {
    if (!knownProfiles.length) {
      try {
        knownProfiles = (await api(`${API}/profiles`)).profiles.map((p) => p.path_id);
      } catch (err) {
        if (mine === generation) failed(err);
        return;
      }
    }
    if (mine !== generation) return;
    fillActivityForm(params);
    const q = new URLSearchParams();
    for (const k of [...ACTIVITY_FILTERS, 'before_id']) {
      const v = params.get(k);
      if (v) q.set(k, v);
    }
    await fetching(mine, `${API}/events?${q}`, (body) => {
      const events = body.events;
      empty($('activity').tBodies[0]).append(...activityRows(events));
      $('activity').hidden = !events.length;
      $('activity-empty').hidden = events.length > 0;
      const limit = Number(q.get('limit') ?? 100);
      $('older').hidden = events.length < limit;
      $('older').dataset.before = events.length ? String(events[events.length - 1].id) : '';
      $('newer').hidden = !q.has('before_id');
    }, () => {
      empty($('activity').tBodies[0]);
      $('older').hidden = true;
    });
  }

  function activitySearch(values) {
    const q = new URLSearchParams({ tab: 'activity' });
    for (const [k, v] of Object.entries(values)) if (v) q.set(k, v);
    return `?${q}`;
  }

  /** `a, b` as the API's list form `a,b`. */
  function list(text) {
    return text.split(',').map((v) => v.trim()).filter(Boolean).join(',');
  }

  function formValues() {
    const since = $('f-since').value;
    return {
      profile: $('f-profile').value,
      action: list($('f-action').value),
      outcome: list($('f-outcome').value),
      since: since ? toRfc3339(since) : '',
      limit: $('f-limit').value === '100' ? '' : $('f-limit').value,
    };
  }

  // ---- Certificates ---------------------------------------------------------------------

  const CERTIFICATE_FILTERS = ['q', 'serial', 'profile', 'status'];
  const CERTIFICATES_PAGE = 50;
  let charts = [];

  function destroyCharts() {
    charts.forEach((c) => c.destroy());
    charts = [];
    for (const id of ['chart-24h', 'chart-7d', 'chart-expiry']) empty($(id));
  }

  function statusBadge(c) {
    if (c.status === 'revoked') return badge(`revoked (${c.revocation_reason})`, 'expired');
    if (c.status === 'expired') return badge('expired', 'expired');
    return badge('valid', 'green');
  }

  function chartWidth(id) {
    return Math.max(280, $(id).clientWidth || 360);
  }

  /** Per-hour series over `hours` hours ending now, zeros where the log has nothing. */
  function hourlySeries(activity, nowUnix, hours) {
    const end = Math.floor(nowUnix / 3600) * 3600;
    const byHour = new Map(activity.map((h) => [h.hour_unix, h]));
    const xs = [], ok = [], failed = [];
    for (let t = end - (hours - 1) * 3600; t <= end; t += 3600) {
      const h = byHour.get(t);
      xs.push(t);
      ok.push(h ? h.enrolments : 0);
      failed.push(h ? h.failures : 0);
    }
    return [xs, ok, failed];
  }

  function activityChart(id, data) {
    const opts = {
      width: chartWidth(id), height: 180, legend: { show: true },
      scales: { x: { time: true } },
      axes: [{}, { size: 40 }],
      series: [
        {},
        { label: 'enrolments', stroke: '#15803d', fill: 'rgba(21,128,61,0.12)', width: 2 },
        { label: 'failures', stroke: '#b91c1c', width: 2 },
      ],
    };
    charts.push(new uPlot(opts, data, $(id)));
  }

  function expiryChart(id, months) {
    if (!months.length) {
      $(id).append(el('p', { class: 'none' }, 'No valid certificates.'));
      return;
    }
    const xs = months.map((m, i) => i);
    const opts = {
      width: chartWidth(id), height: 180, legend: { show: false },
      scales: { x: { time: false, range: [-0.5, months.length - 0.5] } },
      axes: [{ values: (_u, ticks) => ticks.map((t) => (Number.isInteger(t) && months[t] ? months[t].month : '')) },
        { size: 40 }],
      series: [{}, { label: 'certificates', stroke: '#1d4ed8', fill: 'rgba(29,78,216,0.35)',
        paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } }],
    };
    charts.push(new uPlot(opts, [xs, months.map((m) => m.certificates)], $(id)));
  }

  function loadCharts(mine) {
    return fetching(mine, `${API}/charts`, (body) => {
      destroyCharts();
      if (typeof uPlot !== 'function') {
        $('chart-24h').append(el('p', { class: 'none' }, 'The charting library did not load.'));
        return;
      }
      const activity = body.activity || [];
      activityChart('chart-24h', hourlySeries(activity, body.now_unix, 24));
      activityChart('chart-7d', hourlySeries(activity, body.now_unix, 7 * 24));
      expiryChart('chart-expiry', body.expiry_months);
      for (const [id, n] of [['chart-24h', 24], ['chart-7d', 168]]) $(id).dataset.hours = String(n);
      $('chart-expiry').dataset.months = String(body.expiry_months.length);
    }, () => destroyCharts());
  }

  function fillCertificateForm(params) {
    const profile = $('c-profile');
    const chosen = params.get('profile') ?? '';
    const names = [...new Set([...knownProfiles, chosen].filter(Boolean))].sort();
    empty(profile).append(el('option', { value: '' }, 'any'), ...names.map((n) => el('option', { value: n }, n)));
    profile.value = chosen;
    $('c-q').value = params.get('q') ?? '';
    $('c-serial').value = params.get('serial') ?? '';
    $('c-status').value = ['valid', 'revoked', 'expired'].includes(params.get('status')) ? params.get('status') : '';
  }

  function certificateRows(list) {
    return list.map((c) => el('tr', { 'data-serial': c.serial },
      el('td', { class: 'mono' }, c.serial),
      el('td', {}, c.subject, c.subject_alt_names.length ? [el('br'), el('span', { class: 'muted' }, c.subject_alt_names.join(', '))] : null),
      el('td', {}, c.profile),
      el('td', {}, statusBadge(c)),
      el('td', { class: 'time' }, c.not_after, ' ', c.status === 'revoked' ? null : expiryBadge({ ...c, status: c.expiry_status })),
      el('td', { class: 'time' }, c.issued_at),
      el('td', {}, el('button', { type: 'button', class: 'link details', onclick: () => openCertificate(c.serial) }, 'details'))));
  }

  async function loadCertificates(params, mine) {
    if (!knownProfiles.length) {
      try {
        knownProfiles = (await api(`${API}/profiles`)).profiles.map((p) => p.path_id);
      } catch (err) {
        if (mine === generation) failed(err);
        return;
      }
    }
    if (mine !== generation) return;
    fillCertificateForm(params);
    const q = new URLSearchParams({ limit: String(CERTIFICATES_PAGE) });
    for (const k of [...CERTIFICATE_FILTERS, 'cursor']) {
      const v = params.get(k);
      if (v) q.set(k, v);
    }
    await Promise.all([loadCharts(mine), fetching(mine, `${API}/certificates?${q}`, (body) => {
      const list = body.certificates;
      empty($('certificates').tBodies[0]).append(...certificateRows(list));
      $('certificates').hidden = !list.length;
      $('certificates-empty').hidden = list.length > 0;
      // next_cursor, not next_before_id: row ids are per CA and the list merges every local CA.
      $('certificates-older').hidden = body.next_cursor === null;
      $('certificates-older').dataset.cursor = body.next_cursor === null ? '' : body.next_cursor;
      $('certificates-newer').hidden = !q.has('cursor');
    }, () => {
      empty($('certificates').tBodies[0]);
      $('certificates-older').hidden = true;
    })]);
  }

  // The details dialog; Revoke asks again, naming the certificate and a reason.
  let shownCertificate = null;
  let revokeBusy = false;

  function historyItem(e) {
    const what = e.action === 'certificate_revoked' ? 'revoked'
      : e.renewal_of && e.serial !== shownCertificate.serial ? `renewed by ${e.serial}`
        : e.renewal_of ? `issued as a renewal of ${e.renewal_of}` : 'issued';
    return el('li', {}, el('span', { class: 'time' }, e.time), ' ', el('strong', {}, what), ' ',
      el('span', { class: 'muted' }, `${e.action} · ${e.outcome}`), e.detail ? [' — ', e.detail] : null);
  }

  function showCertificate(c) {
    shownCertificate = c;
    $('certificate-title').textContent = `Certificate ${c.serial}`;
    empty($('certificate-fields')).append(
      ...row('Subject', c.subject),
      ...row('SANs', c.subject_alt_names.join(', ') || '—'),
      ...row('Serial', el('code', {}, c.serial)),
      ...row('Status', statusBadge(c), c.revoked_at ? ` since ${c.revoked_at}` : ''),
      ...row('Profile', c.profile),
      ...row('Issuer', c.issuer_id),
      ...row('Valid', `${c.not_before} — ${c.not_after} `, c.status === 'revoked' ? '' : expiryBadge({ ...c, status: c.expiry_status })),
      ...row('Intune device', c.intune_device_id ?? '—'),
      ...row('Renews', c.renewal_of ?? '—'),
      ...row('Renewed by', c.renewed_by.length ? c.renewed_by.join(', ') : '—'));
    $('certificate-pem').textContent = c.pem;
    const history = c.history || [];
    empty($('certificate-history')).append(...history.map(historyItem));
    if (!history.length) $('certificate-history').append(el('li', { class: 'muted' }, 'No audit events.'));
    $('revoke-box').hidden = true;
    $('revoke-confirm').hidden = true;
    $('revoke-start').hidden = c.status === 'revoked';
    $('certificate-error').hidden = true;
  }

  async function openCertificate(serial) {
    try {
      const c = await api(`${API}/certificates/${encodeURIComponent(serial)}`);
      showCertificate(c);
      if (!$('certificate-dialog').open) $('certificate-dialog').showModal();
    } catch (err) {
      failed(err);
    }
  }

  function startRevoke() {
    const c = shownCertificate;
    $('revoke-text').textContent =
      `Revoke ${c.subject} (serial ${c.serial}, profile ${c.profile})? Relying parties will refuse it; this cannot be undone.`;
    $('revoke-reason').value = 'unspecified';
    $('revoke-box').hidden = false;
    $('revoke-start').hidden = true;
    $('revoke-confirm').hidden = false;
    $('revoke-reason').focus();
  }

  async function confirmRevoke(event) {
    event.preventDefault();
    if (revokeBusy || !shownCertificate) return;
    const c = shownCertificate;
    const reason = $('revoke-reason').value;
    revokeBusy = true;
    $('revoke-confirm').disabled = true;
    $('certificate-error').hidden = true;
    try {
      await api(`${API}/certificates/${encodeURIComponent(c.serial)}/revoke`,
        { method: 'POST', body: JSON.stringify({ reason }) });
      toast(`Revoked ${c.subject} (serial ${c.serial}): ${reason}.`);
      await openCertificate(c.serial);
      const { params } = currentView();
      await loadCertificates(params, generation);
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        $('certificate-dialog').close();
        failed(err);
        return;
      }
      $('certificate-error').textContent = err.message;
      $('certificate-error').hidden = false;
    } finally {
      revokeBusy = false;
      $('revoke-confirm').disabled = false;
    }
  }

  function certificateSearch() {
    const q = new URLSearchParams({ tab: 'certificates' });
    for (const [k, id] of [['q', 'c-q'], ['serial', 'c-serial'], ['profile', 'c-profile'], ['status', 'c-status']]) {
      const v = $(id).value.trim();
      if (v) q.set(k, v);
    }
    return `?${q}`;
  }

  // ---- Wiring ---------------------------------------------------------------------------

  function start() {
    $('sign-in-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const key = $('api-key').value.trim();
      // Only visible ASCII can be sent as a header value here (docs/gui.md, "Signing in").
      if (!/^[\x21-\x7e]+$/.test(key)) {
        signOut('An API key is made of visible ASCII characters, without spaces.');
        return;
      }
      sessionStorage.setItem(KEY_STORE, key);
      $('api-key').value = '';
      $('sign-in-error').hidden = true;
      render();
    });
    for (const b of ['sign-out', 'forbidden-sign-out']) $(b).addEventListener('click', () => signOut());
    $('refresh').addEventListener('click', () => render());
    // In-app links (tabs, "View Intune details", filters) switch views without a reload.
    document.addEventListener('click', (event) => {
      const a = event.target.closest('a.nav, nav.tabs a');
      if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      navigate(new URL(a.href).search);
    });
    window.addEventListener('popstate', () => {
      if (sessionStorage.getItem(KEY_STORE)) render();
      else signOut();
    });
    $('activity-form').addEventListener('submit', (event) => {
      event.preventDefault();
      navigate(activitySearch(formValues()));
    });
    $('activity-reset').addEventListener('click', (event) => {
      event.preventDefault();
      navigate('?tab=activity');
    });
    // Paging keeps the filters that were applied (the address), not what the form holds now.
    const page = (before) => {
      const q = new URLSearchParams(currentView().params);
      q.set('tab', 'activity');
      if (before) q.set('before_id', before);
      else q.delete('before_id');
      navigate(`?${q}`);
    };
    $('older').addEventListener('click', () => page($('older').dataset.before));
    $('newer').addEventListener('click', () => page(null));
    $('reload-form').addEventListener('submit', confirmReload);
    $('reload-cancel').addEventListener('click', () => $('reload-dialog').close());
    // Escape must not hide a reload in flight: its outcome is shown in the dialog.
    $('reload-dialog').addEventListener('cancel', (event) => {
      if (reloadBusy) event.preventDefault();
    });

    $('certificates-form').addEventListener('submit', (event) => {
      event.preventDefault();
      navigate(certificateSearch());
    });
    $('certificates-reset').addEventListener('click', (event) => {
      event.preventDefault();
      navigate('?tab=certificates');
    });
    const certificatePage = (cursor) => {
      const q = new URLSearchParams(currentView().params);
      q.set('tab', 'certificates');
      q.delete('before_id');
      if (cursor) q.set('cursor', cursor);
      else q.delete('cursor');
      navigate(`?${q}`);
    };
    $('certificates-older').addEventListener('click', () => certificatePage($('certificates-older').dataset.cursor));
    $('certificates-newer').addEventListener('click', () => certificatePage(null));
    $('revoke-start').addEventListener('click', startRevoke);
    $('certificate-form').addEventListener('submit', confirmRevoke);
    $('certificate-close').addEventListener('click', () => $('certificate-dialog').close());
    $('certificate-dialog').addEventListener('cancel', (event) => {
      if (revokeBusy) event.preventDefault();
    });

    $('challenge-form').addEventListener('submit', mintChallenge);
    $('challenge-copy').addEventListener('click', copyChallenge);
    // Closing forgets the challenge: it is shown once. The dialog's 'close'
    // event is queued as a task (Escape closes it too), so the Close button
    // forgets it before the dialog goes away, not after.
    const forgetChallenge = () => {
      $('challenge-value').textContent = '';
    };
    $('challenge-cancel').addEventListener('click', () => {
      forgetChallenge();
      $('challenge-dialog').close();
    });
    $('challenge-dialog').addEventListener('close', forgetChallenge);

    if (sessionStorage.getItem(KEY_STORE)) render();
    else signOut();
  }

  start();
})();
