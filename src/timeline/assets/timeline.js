// lunledger timeline: draws the journal's timeline (embedded as JSON) as inline SVG.
// Marks are drawn one by one when few are in view; at wide zoom each lane is drawn as one
// aggregate per pixel column, so a million records render in a few seconds.
(function () {
  'use strict';
  var body = document.body;
  var D = JSON.parse(document.getElementById('timeline-data').textContent);
  var R = D.records;
  var chart = document.getElementById('chart');
  var svg = document.getElementById('svg');
  var tip = document.getElementById('tip');
  var LABEL_W = 96, AXIS_H = 26, LANE_H = 32, OP_ROW_H = 10, PAD = 8, SECTION_H = 18;
  var RESTART_LABEL_H = 0;
  var width = 1200;
  var v0 = 0, v1 = Math.max(D.end, 1);
  var marks = [];        // mark key -> {kind, obj, ops}
  var selected = null;   // {ops: {opId: true}, key}
  var drawn = 0;         // marks drawn in the last render
  var opRows = 0;
  D.ops.forEach(function (o) { if (o.row + 1 > opRows) opRows = o.row + 1; });
  var maxOpDur = 0;
  D.ops.forEach(function (o) { if (o.stop - o.start > maxOpDur) maxOpDur = o.stop - o.start; });
  var maxLines = 0;
  D.restarts.forEach(function (r) { if (r.did.length > maxLines) maxLines = r.did.length; });
  RESTART_LABEL_H = D.restarts.length ? (Math.min(maxLines, 13) + 1) * 12 + 8 : 0;
  var laneIndex = {};
  D.lanes.forEach(function (l, i) { laneIndex[l.slot] = i; });

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c];
    });
  }
  function diskColor(i) { return 'hsl(' + ((i * 137.508) % 360).toFixed(0) + ',60%,62%)'; }
  function plotW() { return width - LABEL_W - PAD; }
  function x(t) { return LABEL_W + (t - v0) / (v1 - v0) * plotW(); }
  function clampX(px) { return Math.max(LABEL_W, Math.min(width - PAD, px)); }
  function laneTop(i) { return AXIS_H + RESTART_LABEL_H + i * LANE_H; }
  function opsTop() { return laneTop(D.lanes.length) + SECTION_H; }
  function totalH() { return opsTop() + Math.max(opRows, 1) * OP_ROW_H + 16; }
  function absTime(rel) {
    var us = D.t0 + rel;
    var d = new Date(Math.floor(us / 1000));
    return d.toISOString().replace('T', ' ').replace('Z', '') + String(us % 1000).padStart(3, '0');
  }
  function dur(us) {
    if (us < 1000) return us + ' \u00b5s';
    if (us < 1e6) return (us / 1000).toFixed(1) + ' ms';
    return (us / 1e6).toFixed(2) + ' s';
  }
  function basename(p) { var i = p.lastIndexOf('/'); return i >= 0 ? p.slice(i + 1) : p; }

  function mark(kind, obj, ops) {
    marks.push({ kind: kind, obj: obj, ops: ops });
    return marks.length - 1;
  }
  function related(m) {
    if (!selected) return true;
    for (var i = 0; i < m.ops.length; i++) if (selected.ops[m.ops[i]]) return true;
    return false;
  }
  function cls(k) { return related(marks[k]) ? '' : ' dim'; }
  function rect(out, k, c, x0, y, w, h, fill) {
    drawn++;
    out.push('<rect data-k="' + k + '" class="' + c + cls(k) + '" x="' + x0.toFixed(1) + '" y="' + y +
      '" width="' + Math.max(w, 1.5).toFixed(1) + '" height="' + h + '"' + (fill ? ' fill="' + fill + '"' : '') + '/>');
  }

  // First index in `arr` (sorted by key) whose key(x) >= v.
  function lowerBound(arr, v, key) {
    var lo = 0, hi = arr.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (key(arr[mid]) < v) lo = mid + 1; else hi = mid; }
    return lo;
  }

  function spanBad(a) {
    if (a.end === 'due' || a.end === 'lost') return true;
    for (var i = 0; i < a.steps.length; i++) if (a.steps[i].outcome !== 'ok') return true;
    for (var j = 0; j < a.mounts.length; j++) {
      var m = a.mounts[j];
      if (m.end === 'due' || m.end === 'lost') return true;
      for (var s = 0; s < m.steps.length; s++) if (m.steps[s].outcome !== 'ok') return true;
    }
    return false;
  }

  // One aggregate rectangle per run of pixel columns with the same density level.
  function drawBins(out, bins, bad, y, h, meta) {
    var W = bins.length, c = 0;
    while (c < W) {
      if (!bins[c]) { c++; continue; }
      var lvl = bad[c] ? 'bad' : 'l' + Math.min(4, Math.ceil(Math.log2(bins[c] + 1)));
      var c0 = c, n = 0;
      while (c < W && bins[c] && (bad[c] ? 'bad' : 'l' + Math.min(4, Math.ceil(Math.log2(bins[c] + 1)))) === lvl) { n += bins[c]; c++; }
      var k = mark('agg', { what: meta, count: n, bad: lvl === 'bad', t0: v0 + c0 / W * (v1 - v0), t1: v0 + c / W * (v1 - v0) }, []);
      rect(out, k, 'agg ' + lvl, LABEL_W + c0, y, c - c0, h);
    }
  }

  function drawSteps(out, steps, y, h, span) {
    for (var i = 0; i < steps.length; i++) {
      var s = steps[i];
      if (s.stop < v0 || s.start > v1) continue;
      var k = mark('step', { s: s, span: span }, [s.op]);
      var x0 = clampX(x(s.start)), x1 = clampX(x(s.stop));
      // A step that did not simply succeed must be seen even when it took no time.
      var odd = s.outcome !== 'ok';
      rect(out, k, 'step step-' + s.step + ' ' + s.outcome, odd ? x0 - 2 : x0, odd ? y - 1 : y, odd ? Math.max(x1 - x0 + 4, 6) : x1 - x0, odd ? h + 4 : h);
    }
  }

  function drawLane(out, li) {
    var lane = D.lanes[li];
    var y = laneTop(li);
    out.push('<g class="lane" data-slot="' + esc(lane.slot) + '">');
    out.push('<rect class="lane-bg' + (li % 2 ? ' odd' : '') + '" x="0" y="' + y + '" width="' + width + '" height="' + LANE_H + '"/>');
    out.push('<text class="lane-label" x="6" y="' + (y + 19) + '">' + esc(lane.slot) + '</text>');
    var spans = lane.spans;
    var i0 = lowerBound(spans, v0, function (a) { return a.stop; });
    var i1 = lowerBound(spans, v1, function (a) { return a.start; });
    // Spans at a slot never overlap, so starts and stops are both sorted.
    if (i1 - i0 > plotW() / 4) {
      var W = Math.max(1, Math.floor(plotW()));
      var bins = new Float64Array(W), bad = new Uint8Array(W);
      for (var i = i0; i < i1 && i < spans.length; i++) {
        var a = spans[i];
        var c0 = Math.max(0, Math.floor(x(a.start) - LABEL_W)), c1 = Math.min(W - 1, Math.floor(x(a.stop) - LABEL_W));
        var b = spanBad(a);
        for (var c = c0; c <= c1; c++) { bins[c] += 1; if (b) bad[c] = 1; }
      }
      drawBins(out, bins, bad, y + 3, LANE_H - 6, 'attachments at ' + lane.slot);
    } else {
      for (var j = i0; j < i1 && j < spans.length; j++) drawAttachment(out, spans[j], y);
    }
    D.drift.forEach(function (d) {
      if (d.slot === lane.slot && d.at >= v0 && d.at <= v1) drawDrift(out, d, y + LANE_H / 2);
    });
    out.push('</g>');
  }

  function drawAttachment(out, a, y) {
    var x0 = clampX(x(a.start)), x1 = clampX(x(a.stop));
    var k = mark('attach', a, a.ops);
    var c = 'att' + (a.read_only ? ' ro' : '') + ' ' + a.end;
    rect(out, k, c, x0, y + 3, x1 - x0, 14, diskColor(a.disk));
    if (a.end === 'due' || a.end === 'lost') {
      out.push('<rect class="due-hatch" x="' + x0.toFixed(1) + '" y="' + (y + 3) + '" width="' + Math.max(x1 - x0, 1.5).toFixed(1) + '" height="14"/>');
    }
    if (x1 - x0 > 40) {
      var label = (a.read_only ? '[RO] ' : '') + basename(D.disks[a.disk]) + (a.end === 'due' ? ' \u2014 teardown due' : a.end === 'lost' ? ' \u2014 lost' : '');
      out.push('<text x="' + (x0 + 3).toFixed(1) + '" y="' + (y + 14) + '">' + esc(label.slice(0, Math.floor((x1 - x0) / 6))) + '</text>');
    }
    drawSteps(out, a.steps, y + 1, 4, a);
    for (var i = 0; i < a.mounts.length; i++) {
      var m = a.mounts[i];
      if (m.stop < v0 || m.start > v1) continue;
      var mx0 = clampX(x(m.start)), mx1 = clampX(x(m.stop));
      var mk = mark('mount', { m: m, a: a }, m.ops);
      rect(out, mk, 'mnt ' + m.end, mx0, y + 19, mx1 - mx0, 10, diskColor(a.disk));
      if (mx1 - mx0 > 40) {
        out.push('<text x="' + (mx0 + 3).toFixed(1) + '" y="' + (y + 27) + '">' + esc(m.path.slice(0, Math.floor((mx1 - mx0) / 6))) + '</text>');
      }
      drawSteps(out, m.steps, y + 19, 4, m);
    }
  }

  function drawDrift(out, d, cy) {
    var k = mark('drift', d, []);
    var cx = x(d.at);
    drawn++;
    out.push('<path data-k="' + k + '" class="drift' + cls(k) + '" d="M' + cx.toFixed(1) + ' ' + (cy - 6) + 'l6 6l-6 6l-6 -6z"/>');
  }

  function drawOps(out) {
    var top = opsTop();
    out.push('<text class="section" x="6" y="' + (top - 5) + '">operations</text>');
    var ops = D.ops;
    var i0 = lowerBound(ops, v0 - maxOpDur, function (o) { return o.start; });
    var i1 = lowerBound(ops, v1 + 1, function (o) { return o.start; });
    var visible = 0;
    for (var i = i0; i < i1; i++) if (ops[i].stop >= v0) visible++;
    if (visible > plotW() / 2) {
      var W = Math.max(1, Math.floor(plotW()));
      var rows = [];
      for (var r = 0; r < opRows; r++) rows.push({ bins: new Float64Array(W), bad: new Uint8Array(W) });
      for (var j = i0; j < i1; j++) {
        var o = ops[j];
        if (o.stop < v0) continue;
        var c0 = Math.max(0, Math.floor(x(o.start) - LABEL_W)), c1 = Math.min(W - 1, Math.floor(x(o.stop) - LABEL_W));
        var row = rows[o.row], b = o.outcome !== 'ok';
        for (var c = c0; c <= c1; c++) { row.bins[c] += 1; if (b) row.bad[c] = 1; }
      }
      rows.forEach(function (row, ri) { drawBins(out, row.bins, row.bad, top + ri * OP_ROW_H, OP_ROW_H - 2, 'operations'); });
      return;
    }
    for (var q = i0; q < i1; q++) {
      var op = ops[q];
      if (op.stop < v0) continue;
      var x0 = clampX(x(op.start)), x1 = clampX(x(op.stop));
      var k = mark('op', op, [op.op]);
      rect(out, k, 'op ' + op.outcome + (op.kind === 'recovery' ? ' recovery' : ''), x0, top + op.row * OP_ROW_H, x1 - x0, OP_ROW_H - 2);
    }
  }

  function drawRestarts(out) {
    var lastLabel = -1e9, bottom = totalH() - 10;
    D.restarts.forEach(function (r, i) {
      if (r.at < v0 || r.last_before > v1) return;
      var g0 = clampX(x(r.last_before)), g1 = clampX(x(r.at));
      out.push('<rect class="gap" x="' + g0.toFixed(1) + '" y="' + AXIS_H + '" width="' + Math.max(g1 - g0, 0).toFixed(1) + '" height="' + (bottom - AXIS_H) + '"/>');
      var k = mark('restart', r, [r.op]);
      drawn++;
      out.push('<line data-k="' + k + '" data-op="' + r.op + '" class="restart' + cls(k) + '" x1="' + g1.toFixed(1) + '" x2="' + g1.toFixed(1) + '" y1="' + AXIS_H + '" y2="' + bottom + '"/>');
      // Labels of restarts closer than a label's width would overlap: the later one is left to
      // the hover.
      if (g1 - lastLabel < 260) return;
      lastLabel = g1;
      var lines = ['shim restart ' + (i + 1) + ' (silent ' + dur(r.at - r.last_before) + '), recovery op ' + r.op + ':'].concat(r.did.slice(0, 13));
      var lx = Math.min(g1 + 4, width - 264), ly = AXIS_H + 2;
      out.push('<rect class="restart-label-bg" x="' + lx.toFixed(1) + '" y="' + ly + '" width="256" height="' + (lines.length * 12 + 4) + '"/>');
      lines.forEach(function (line, li) {
        out.push('<text class="restart-label" x="' + (lx + 4).toFixed(1) + '" y="' + (ly + 12 + li * 12) + '">' + esc(line.slice(0, 48)) + '</text>');
      });
    });
  }

  function drawAxis(out) {
    var span = v1 - v0, target = plotW() / 110, raw = span / Math.max(target, 1);
    var p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
    var step = [1, 2, 5, 10].map(function (m) { return m * p; }).find(function (s) { return s >= raw; }) || 10 * p;
    out.push('<g class="axis">');
    for (var t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
      var px = x(t);
      out.push('<line x1="' + px.toFixed(1) + '" x2="' + px.toFixed(1) + '" y1="' + (AXIS_H - 4) + '" y2="' + (totalH() - 10) + '"/>');
      var label = step >= 1e6 ? absTime(t).slice(11, 19) : absTime(t).slice(11, 23);
      out.push('<text x="' + (px + 2).toFixed(1) + '" y="' + (AXIS_H - 8) + '">' + label + '</text>');
    }
    out.push('</g>');
  }

  function render() {
    marks = [];
    drawn = 0;
    width = Math.max(640, chart.clientWidth || 1200);
    var out = [];
    out.push('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">' +
      '<rect width="3" height="6" fill="#c53030" fill-opacity="0.45"/></pattern>' +
      '<pattern id="unknown" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">' +
      '<rect width="2" height="4" fill="#e53e3e"/><rect x="2" width="2" height="4" fill="#fff"/></pattern></defs>');
    drawAxis(out);
    for (var i = 0; i < D.lanes.length; i++) drawLane(out, i);
    D.drift.forEach(function (d) {
      if (d.slot == null && d.at >= v0 && d.at <= v1) drawDrift(out, d, opsTop() - 10);
    });
    drawOps(out);
    drawRestarts(out);
    svg.setAttribute('width', width);
    svg.setAttribute('height', totalH());
    svg.innerHTML = out.join('');
    body.dataset.marks = drawn;
  }

  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    // The next frame, or a timer when frames are not coming (a hidden tab or frame).
    var fire = function () { if (!pending) return; pending = false; render(); };
    requestAnimationFrame(fire);
    setTimeout(fire, 100);
  }

  function recordRows(recs) {
    var rows = recs.map(function (i) {
      var err = R.err[i] ? R.texts[R.err[i] - 1] : '';
      var out = R.names[R.out[i]];
      return '<tr><td>' + R.seq[i] + '</td><td>' + absTime(R.t[i]).slice(11) + '</td><td>op ' + R.op[i] + '</td><td>' +
        esc(R.names[R.ev[i]]) + '</td><td' + (out === 'failed' || out === 'rolled-back' ? ' class="bad"' : '') + '>' +
        esc(out) + '</td><td class="bad">' + esc(err) + '</td></tr>';
    });
    var more = recs.length >= 24 ? '<div>(first 24 records)</div>' : '';
    return rows.length ? '<table><tr><td>seq</td><td>time</td><td>op</td><td>event</td><td>outcome</td><td>error</td></tr>' + rows.join('') + '</table>' + more : '';
  }

  // An operation's records, found through the records' op column (the first 24).
  function recsOfOp(op) {
    var out = [];
    for (var i = 0; i < R.op.length && out.length < 24; i++) if (R.op[i] === op) out.push(i);
    return out;
  }

  function describe(m) {
    var o = m.obj;
    switch (m.kind) {
      case 'attach':
        return 'attachment ' + o.attach + ' ' + esc(D.disks[o.disk]) + (o.read_only ? ' (read-only)' : ' (read-write)') +
          '\n' + dur(o.stop - o.start) + ', ends: ' + o.end + '; ops ' + o.ops.join(', ') + (o.handles.length ? '; handles ' + o.handles.join(', ') : '') + recordRows(o.recs);
      case 'mount':
        return 'mount ' + o.m.mount + ' at ' + esc(o.m.path) + ' (' + esc(basename(D.disks[o.a.disk])) + ')\n' + dur(o.m.stop - o.m.start) +
          ', ends: ' + o.m.end + recordRows(o.m.recs);
      case 'step':
        return o.s.step + ' by op ' + o.s.op + ': ' + o.s.outcome + ', ' + dur(o.s.stop - o.s.start) +
          (o.s.outcome === 'none' ? ' (no outcome recorded: the shim stopped)' : '') + (o.s.error ? '\n<span class="bad">' + esc(o.s.error) + '</span>' : '') + recordRows(o.s.recs);
      case 'op':
        return 'op ' + o.op + ' ' + o.kind + (o.owner ? ' for ' + esc(o.owner) : '') + (o.disk != null ? ' ' + esc(D.disks[o.disk]) : '') +
          (o.handle != null ? ', handle ' + o.handle : '') + (o.slot ? ', slot ' + o.slot : '') + '\n' + o.outcome + ', ' + dur(o.stop - o.start) +
          (o.error ? '\n<span class="bad">' + esc(o.error) + '</span>' : '') + recordRows(recsOfOp(o.op));
      case 'restart':
        return 'shim restart: the journal was silent for ' + dur(o.at - o.last_before) + ', then recovery op ' + o.op + ':\n' +
          o.did.map(esc).join('\n') + recordRows(recsOfOp(o.op));
      case 'drift':
        return 'drift' + (o.slot ? ' at ' + o.slot : '') + ': ' + esc(o.what) + recordRows(o.recs);
      case 'agg':
        return o.count + ' ' + esc(o.what) + (o.bad ? ' (some failed, due or lost)' : '') + ' between ' + absTime(Math.round(o.t0)).slice(11) +
          ' and ' + absTime(Math.round(o.t1)).slice(11) + '\nzoom in (mouse wheel) to see each one';
    }
    return '';
  }

  svg.addEventListener('mousemove', function (e) {
    var k = e.target.getAttribute && e.target.getAttribute('data-k');
    if (k === null || !marks[k]) { tip.hidden = true; return; }
    tip.innerHTML = describe(marks[k]);
    tip.hidden = false;
    var tx = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 4);
    var ty = e.clientY + 14 + tip.offsetHeight > window.innerHeight ? e.clientY - tip.offsetHeight - 8 : e.clientY + 14;
    tip.style.left = Math.max(0, tx) + 'px';
    tip.style.top = Math.max(0, ty) + 'px';
  });
  svg.addEventListener('mouseleave', function () { tip.hidden = true; });

  var drag = null;
  svg.addEventListener('click', function (e) {
    if (drag && drag.moved) return;
    var k = e.target.getAttribute && e.target.getAttribute('data-k');
    var m = k !== null ? marks[k] : null;
    if (!m || !m.ops.length) { selected = null; }
    else {
      selected = { ops: {} };
      m.ops.forEach(function (op) { selected.ops[op] = true; });
    }
    document.getElementById('selection').textContent = selected ? 'selected: op ' + m.ops.slice(0, 8).join(', ') + ' (click empty space to clear)' : '';
    render();
  });
  chart.addEventListener('wheel', function (e) {
    e.preventDefault();
    var rect = svg.getBoundingClientRect();
    var px = e.clientX - rect.left;
    var t = v0 + (Math.max(LABEL_W, px) - LABEL_W) / plotW() * (v1 - v0);
    zoom(e.deltaY < 0 ? 0.8 : 1.25, t);
  }, { passive: false });
  function zoom(f, at) {
    var span = Math.max((v1 - v0) * f, 10);
    var frac = (at - v0) / (v1 - v0);
    v0 = at - frac * span;
    v1 = v0 + span;
    schedule();
  }
  svg.addEventListener('mousedown', function (e) { drag = { x: e.clientX, v0: v0, v1: v1, moved: false }; chart.classList.add('dragging'); });
  window.addEventListener('mousemove', function (e) {
    if (!drag || e.buttons !== 1) return;
    var dx = e.clientX - drag.x;
    if (Math.abs(dx) > 3) drag.moved = true;
    var dt = dx / plotW() * (drag.v1 - drag.v0);
    v0 = drag.v0 - dt; v1 = drag.v1 - dt;
    schedule();
  });
  window.addEventListener('mouseup', function () { chart.classList.remove('dragging'); setTimeout(function () { drag = null; }, 0); });
  document.getElementById('zoom-in').onclick = function () { zoom(0.5, (v0 + v1) / 2); };
  document.getElementById('zoom-out').onclick = function () { zoom(2, (v0 + v1) / 2); };
  document.getElementById('fit').onclick = function () { v0 = 0; v1 = Math.max(D.end, 1); schedule(); };
  window.addEventListener('resize', schedule);

  function legend() {
    var items = [];
    function sw(c, style) { return '<svg width="18" height="10"><rect width="18" height="10" ' + (c ? 'class="' + c + '"' : '') + (style ? ' style="' + style + '"' : '') + '/></svg>'; }
    var shown = D.disks.slice(0, 30);
    shown.forEach(function (p, i) { items.push('<span class="item">' + sw('att', 'fill:' + diskColor(i)) + esc(basename(p)) + '</span>'); });
    if (D.disks.length > 30) items.push('<span class="item">\u2026 and ' + (D.disks.length - 30) + ' more disks (one colour each)</span>');
    items.push('<span class="item">' + sw('att ro', 'fill:#fff') + 'read-only attachment (dashed) [RO]</span>');
    items.push('<span class="item">' + sw('mnt', 'fill:#a0aec0') + 'guest mount (under its attachment)</span>');
    ['attach', 'mount', 'unmount', 'unplug', 'detach'].forEach(function (s) { items.push('<span class="item">' + sw('step step-' + s) + s + ' step</span>'); });
    items.push('<span class="item">' + sw('step failed') + 'failed step</span>');
    items.push('<span class="item">' + sw('step none') + 'step without outcome (shim stopped)</span>');
    items.push('<span class="item">' + sw('step happened', 'fill:#fff') + 'step settled by recovery</span>');
    [['ok', 'operation ok'], ['failed', 'operation failed'], ['rolled-back', 'rolled back by recovery'], ['abandoned', 'abandoned add'], ['open', 'operation unfinished']].forEach(function (p) {
      items.push('<span class="item">' + sw('op ' + p[0]) + p[1] + '</span>');
    });
    items.push('<span class="item">' + sw('att due', 'fill:url(#hatch)') + 'teardown due / lost (red border)</span>');
    items.push('<span class="item"><svg width="14" height="12"><path class="drift" d="M7 0l6 6l-6 6l-6 -6z"/></svg>drift</span>');
    items.push('<span class="item"><svg width="18" height="12"><rect class="gap" width="18" height="12"/><line class="restart" x1="14" x2="14" y1="0" y2="12"/></svg>shim restart (shaded: journal silent)</span>');
    items.push('<span class="item">' + sw('agg l2') + sw('agg bad') + 'many marks per pixel (darker: more; red: some failed)</span>');
    document.getElementById('legend').innerHTML = items.join('');
  }

  var lanes = D.lanes.length;
  document.getElementById('summary').textContent = 'records ' + D.first_seq + '..' + D.last_seq + ' (' + R.seq.length +
    ' shown), ' + absTime(0) + ' UTC for ' + dur(D.end) + '; ' + lanes + ' slot(s), ' + D.ops.length + ' operation(s), ' +
    D.restarts.length + ' shim restart(s). Wheel: zoom; drag: pan; hover: records; click: select an operation.';
  if (D.problem) document.getElementById('problem').textContent = 'problem: ' + D.problem;
  // A link can carry a view and a selection: #view=FROM,TO (µs after the first record) and
  // #op=N (select operation N), so a bug report can point at the moment that matters.
  (location.hash || '').replace(/^#/, '').split('&').forEach(function (kv) {
    var p = kv.split('=');
    if (p[0] === 'view') {
      var b = (p[1] || '').split(',').map(Number);
      if (b.length === 2 && isFinite(b[0]) && isFinite(b[1]) && b[1] > b[0]) { v0 = b[0]; v1 = b[1]; }
    } else if (p[0] === 'op' && isFinite(Number(p[1]))) {
      selected = { ops: {} };
      selected.ops[Number(p[1])] = true;
      document.getElementById('selection').textContent = 'selected: op ' + Number(p[1]) + ' (click empty space to clear)';
    }
  });
  legend();
  render();
  body.dataset.lanes = lanes;
  body.dataset.restarts = D.restarts.length;
  body.dataset.renderMs = performance.now().toFixed(1);
  requestAnimationFrame(function () {
    // After the first frame with the picture: time to first paint since navigation start.
    body.dataset.paintMs = performance.now().toFixed(1);
    body.dataset.render = 'done';
  });
  body.dataset.render = body.dataset.render || 'drawn';
})();
