// Benchmark peer: the consumer a Node.js user would write with mqtt.js. It
// does what the routemq benchmark handler does (parse the JSON payload, read
// "seq", count) and reports like bench/bench_sub.c, so bench/run.lua drives
// all of them alike:
//   subscribed_ns=T                 once the SUBACK is in
//   count=N first_ns=T last_ns=T cpu_us=U cpu_total_us=U rss_kb=K
// (realtime ns of the first and last message counted; cpu_us: this process's
// user+system CPU from the SUBACK to the last message; rss_kb: VmRSS at the
// end). Exit 0 when N messages were counted.
//
// Usage: node consumer.js -p PORT -n N [-h HOST] [-q QOS] [-f FILTER]
//                         [-t TIMEOUT_S] [-I IDLE_S] [-w WAIT_MS] [-R]
// -w: the handler waits WAIT_MS (setTimeout) before counting; messages are
//     in progress concurrently, as async callbacks are in Node.
// -R: responder: replies to each message on its MQTT 5 response topic with
//     its correlation data (request/reply latency), and never exits by count.
// -D URL: each message inserts its seq into table bench_rows of PostgreSQL
//     database URL with node-postgres (pg.Pool, -P connections, default 16)
//     before it counts; messages are in progress concurrently, without limit.
'use strict';

const fs = require('fs');
const mqtt = require('mqtt');

function parseArgs(argv) {
  const o = { host: '127.0.0.1', port: 0, want: 200000, qos: 0, filter: 'sensors/+/data',
    timeout: 120, idle: 10, wait: 0, reply: false, db: '', pool: 16 };
  const takes = { h: 'host', p: 'port', n: 'want', q: 'qos', f: 'filter', t: 'timeout', I: 'idle', w: 'wait',
    D: 'db', P: 'pool' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i].replace(/^-/, '');
    if (flag === 'R') {
      o.reply = true;
    } else if (takes[flag] && i + 1 < argv.length) {
      const v = argv[++i];
      o[takes[flag]] = (flag === 'h' || flag === 'f' || flag === 'D') ? v : Number(v);
    } else {
      process.stderr.write('usage: node consumer.js -p PORT -n N [-h HOST] [-q 0|1] [-f FILTER] ' +
        '[-t TIMEOUT_S] [-I IDLE_S] [-w WAIT_MS] [-R]\n');
      process.exit(2);
    }
  }
  if (!(o.port > 0) || !(o.want >= 1)) {
    process.stderr.write('consumer.js: -p PORT and -n N are required\n');
    process.exit(2);
  }
  return o;
}

const opt = parseArgs(process.argv.slice(2));

// Realtime in ns as a decimal string: performance.timeOrigin has µs precision.
function realtimeNs() {
  return String(Math.round((performance.timeOrigin + performance.now()) * 1000)) + '000';
}

function cpuUs() {
  const u = process.cpuUsage();
  return u.user + u.system;
}

function rssKb() {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : 0;
}

let count = 0;
let firstNs = '0';
let lastNs = '0';
let cpuSub = 0;
let cpuLast = 0;
let subscribed = false;
let lastSeen = Date.now();
let finished = false;

const client = mqtt.connect({
  host: opt.host, port: opt.port, protocol: 'mqtt', protocolVersion: 5,
  clientId: 'bench-node-' + process.pid, clean: true, keepalive: 60, reconnectPeriod: 0,
});

function finish(code) {
  if (finished) return;
  finished = true;
  if (count < opt.want) cpuLast = cpuUs();
  process.stdout.write(`count=${count} first_ns=${firstNs} last_ns=${lastNs} cpu_us=${cpuLast - cpuSub} ` +
    `cpu_total_us=${cpuLast} rss_kb=${rssKb()}\n`, () => {
    client.end(true, () => process.exit(code));
    setTimeout(() => process.exit(code), 1000).unref();
  });
}

function counted() {
  const now = realtimeNs();
  if (count === 0) firstNs = now;
  lastNs = now;
  lastSeen = Date.now();
  if (++count === opt.want) {
    cpuLast = cpuUs();
    if (!opt.reply) finish(0);
  }
}

client.on('connect', () => {
  client.subscribe(opt.filter, { qos: opt.qos }, (err, granted) => {
    if (err || !granted || !granted.length || granted[0].qos >= 0x80) {
      process.stderr.write('consumer.js: subscription refused: ' + (err ? err.message : 'granted ' +
        JSON.stringify(granted)) + '\n');
      finish(1);
      return;
    }
    subscribed = true;
    lastSeen = Date.now();
    cpuSub = cpuUs();
    process.stdout.write(`subscribed_ns=${realtimeNs()}\n`);
  });
});

client.on('error', (err) => {
  process.stderr.write('consumer.js: ' + err.message + '\n');
  finish(1);
});
client.on('close', () => finish(count >= opt.want ? 0 : 1));

function handle(payload) {
  const doc = JSON.parse(payload);
  return doc.seq;
}

if (opt.reply) {
  client.on('message', (topic, payload, packet) => {
    const props = packet.properties || {};
    if (props.responseTopic) {
      client.publish(props.responseTopic, payload, { qos: opt.qos,
        properties: props.correlationData ? { correlationData: props.correlationData } : {} });
    }
    counted();
  });
} else if (opt.db) {
  const { Pool } = require('pg');
  const pool = new Pool({ connectionString: opt.db, max: opt.pool });
  client.on('message', async (topic, payload) => {
    const seq = handle(payload);
    try {
      await pool.query('insert into bench_rows(seq) values ($1)', [seq]);
    } catch (err) {
      process.stderr.write('consumer.js: insert failed: ' + err.message + '\n');
      return;
    }
    counted();
  });
} else if (opt.wait > 0) {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  client.on('message', async (topic, payload) => {
    handle(payload);
    await sleep(opt.wait);
    counted();
  });
} else {
  client.on('message', (topic, payload) => {
    handle(payload);
    counted();
  });
}

const started = Date.now();
setInterval(() => {
  const now = Date.now();
  if (now - started > opt.timeout * 1000) finish(1);
  if (subscribed && now - lastSeen > opt.idle * 1000) finish(count >= opt.want ? 0 : 1);
}, 200);

process.on('SIGTERM', () => finish(count >= opt.want ? 0 : 1));
