#!/usr/bin/env node
// faultproxy.js - a TCP proxy for the tests that can misbehave the way networks
// do, so that a dependency "hangs" instead of failing fast.
//
//   node faultproxy.js --target HOST:PORT --port-file FILE --mode-file FILE [--listen HOST:PORT]
//
// It forwards every connection to the target. The mode file (re-read every 50
// ms; absent means pass) says what happens, for connections open and new:
//   pass          forward both ways (what was held goes on: a partition heals)
//   blackhole     accept, read nothing more, forward nothing, answer nothing,
//                 never reset: the peer's kernel keeps acknowledging, so only
//                 the client's own deadlines can tell
//   stall         blackhole the connections open now, and keep their upstream
//                 open when the client closes (its FIN is lost in the partition);
//                 new connections pass: one flow through a dead NAT or load balancer
//   reset         close every connection with an RST; new ones too
//   delay MS      forward each chunk MS milliseconds late
//   drip BYTES    forward at most BYTES bytes a second towards the client
//   hold-answer TEXT  hold what goes back to the first client that sends TEXT
//                 from then on (a Postgres statement's name, in its Bind), until
//                 the mode changes: that answer comes after later ones on
//                 other connections
// Each mode applied is written to FILE.applied. It prints nothing but errors;
// it exits on SIGTERM.
'use strict';
const net = require('net');
const fs = require('fs');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  if (i < 0 || i + 1 >= process.argv.length) {
    if (dflt === undefined) {
      process.stderr.write(`faultproxy: --${name} is required\n`);
      process.exit(2);
    }
    return dflt;
  }
  return process.argv[i + 1];
}

function hostPort(s) {
  const colon = s.lastIndexOf(':');
  return { host: s.slice(0, colon), port: Number(s.slice(colon + 1)) };
}

const target = hostPort(arg('target'));
const listen = hostPort(arg('listen', '127.0.0.1:0'));
const portFile = arg('port-file');
const modeFile = arg('mode-file');

let mode = { name: 'pass', value: 0, text: '' };
let holding = null; // hold-answer: the connection whose answers wait
let applied = null; // the mode text last written to FILE.applied
const pairs = new Set();

function readMode() {
  let text = 'pass';
  try {
    text = fs.readFileSync(modeFile, 'utf8').trim() || 'pass';
  } catch (e) {
    text = 'pass';
  }
  const [name, value] = text.split(/\s+/);
  if (text !== applied) {
    fs.writeFileSync(modeFile + '.applied', text); // proxy_mode waits for it
    applied = text;
  }
  if (name === mode.name && (value || '') === mode.text) return;
  mode = { name, value: Number(value || 0), text: value || '' };
  holding = null;
  for (const p of pairs) {
    if (name === 'stall') p.stalled = true;
    else if (p.stalled) {
      p.stalled = false;
      if (p.clientGone) { close(p); continue; }
    }
    apply(p);
  }
}

// One client connection and its upstream: data is queued per direction, and
// flows only when the mode lets it.
function apply(p) {
  if (p.stalled) {
    p.client.pause();
    if (p.upstream) p.upstream.pause();
    return;
  }
  if (mode.name === 'reset') {
    p.client.resetAndDestroy();
    if (p.upstream) p.upstream.destroy();
    return;
  }
  if (mode.name === 'blackhole') {
    p.client.pause();
    if (p.upstream) p.upstream.pause();
    return;
  }
  if (!p.upstream) connectUpstream(p);
  p.client.resume();
  if (p.upstream) p.upstream.resume();
  flush(p);
}

function send(p, dir, chunk) {
  if (dir === 'up' && mode.name === 'hold-answer' && !holding && chunk.includes(mode.text)) holding = p;
  p.queues[dir].push(chunk);
  flush(p);
}

function flush(p) {
  if (mode.name === 'blackhole' || p.stalled || !p.upstream || p.closed) return;
  for (const dir of ['up', 'down']) {
    const q = p.queues[dir];
    const to = dir === 'up' ? p.upstream : p.client;
    while (q.length && !p.waiting[dir]) {
      if (dir === 'down' && holding === p) break;
      let chunk = q.shift();
      if (mode.name === 'drip' && dir === 'down' && mode.value > 0) {
        if (chunk.length > mode.value) {
          q.unshift(chunk.subarray(mode.value));
          chunk = chunk.subarray(0, mode.value);
        }
        p.waiting[dir] = true;
        to.write(chunk);
        setTimeout(() => { p.waiting[dir] = false; flush(p); }, 1000);
        return;
      }
      if (mode.name === 'delay' && mode.value > 0) {
        p.waiting[dir] = true;
        setTimeout(() => { p.waiting[dir] = false; if (!p.closed) to.write(chunk); flush(p); }, mode.value);
        return;
      }
      to.write(chunk);
    }
  }
}

function close(p) {
  if (p.closed) return;
  p.closed = true;
  pairs.delete(p);
  p.client.destroy();
  if (p.upstream) p.upstream.destroy();
}

function connectUpstream(p) {
  p.upstream = net.connect(target.port, target.host);
  p.upstream.setNoDelay(true);
  p.upstream.on('data', (d) => send(p, 'down', d));
  p.upstream.on('error', () => close(p));
  p.upstream.on('close', () => close(p));
}

const server = net.createServer((client) => {
  const p = { client, upstream: null, queues: { up: [], down: [] }, waiting: { up: false, down: false }, closed: false };
  client.setNoDelay(true);
  pairs.add(p);
  client.on('data', (d) => send(p, 'up', d));
  const gone = () => { if (p.stalled) p.clientGone = true; else close(p); };
  client.on('error', gone);
  client.on('close', gone);
  apply(p);
});

server.listen(listen.port, listen.host, () => {
  readMode();
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
  setInterval(readMode, 50);
});

process.on('SIGTERM', () => process.exit(0));
