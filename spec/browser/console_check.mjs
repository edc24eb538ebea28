// Drives routemq's web console in Debian's chromium (headless) with
// puppeteer-core, against an instance the calling spec started
// (spec/e2e/console_browser_spec.lua). Prints "ok <step>" per step; on the
// first failure prints "FAIL <step>: <why>" and exits 1.
//
// Environment: CONSOLE_URL, CONSOLE_TOKEN, CONSOLE_WORKERS (slots expected),
// CONSOLE_ROUTE (a route under load), CONSOLE_XSS (a topic that failed),
// CONSOLE_PROFILE (chromium's profile directory), CONSOLE_SCREENSHOT (PNG
// path), CONSOLE_SCREENSHOT_PHONE (optional: the page at 390 px),
// CHROMIUM (default /usr/bin/chromium).
import puppeteer from "puppeteer-core";
import process from "node:process";

const env = (k, d) => process.env[k] ?? d;
const URL = env("CONSOLE_URL");
const TOKEN = env("CONSOLE_TOKEN");
const WORKERS = Number(env("CONSOLE_WORKERS", "2"));
const ROUTE = env("CONSOLE_ROUTE");
const XSS = env("CONSOLE_XSS");
const WAIT = 30000;

let step = "launch";
const dialogs = [];

async function run() {
  const browser = await puppeteer.launch({
    executablePath: env("CHROMIUM", "/usr/bin/chromium"),
    headless: true,
    userDataDir: env("CONSOLE_PROFILE"),
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"],
  });
  try {
    const page = await browser.newPage();
    page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
    await page.setViewport({ width: 1280, height: 900 });
    const ok = (name) => console.log("ok " + name);

    step = "without the token the page asks for it and shows nothing else";
    await page.goto(URL, { waitUntil: "load" });
    await page.waitForSelector("#gate:not([hidden])", { timeout: WAIT });
    const locked = await page.evaluate(() => ({
      app: document.getElementById("app").hidden,
      actions: document.getElementById("actions").hidden,
      rows: document.querySelectorAll("#workers tbody tr").length,
      instance: document.getElementById("instance").textContent,
      text: document.body.innerText,
    }));
    if (!locked.app || !locked.actions || locked.rows || locked.instance || /worker|slot|generation/i.test(locked.text))
      throw new Error("the locked page shows more than the token form: " + JSON.stringify(locked));
    await page.type("#gate-token", "not-the-token-0123456789");
    await page.click("#gate-form button");
    await page.waitForFunction(() => document.getElementById("gate-msg").textContent === "That token was refused.",
      { timeout: WAIT });
    if (!(await page.$eval("#app", (e) => e.hidden))) throw new Error("a wrong token opened the page");
    await page.type("#gate-token", TOKEN);
    await page.click("#gate-form button");
    await page.waitForSelector("#app:not([hidden])", { timeout: WAIT });
    ok("token");

    step = "worker rows and their live counters move under load";
    await page.waitForFunction((n) => {
      const rows = [...document.querySelectorAll("#workers tbody tr")];
      return rows.length === n && rows.every((r) => r.cells[1].textContent === "ready");
    }, { timeout: WAIT }, WORKERS);
    const moving = async () => page.$$eval("#workers tbody tr", (rows) => rows.map((r) => r.cells[4].textContent));
    await page.waitForFunction(() => [...document.querySelectorAll("#workers tbody tr td.rate")]
      .some((c) => parseFloat(c.textContent.replace(/,/g, "")) > 0), { timeout: WAIT });
    // The totals line (messages handled) changes from one second to the next.
    const first = await page.evaluate(() => [...document.querySelectorAll("#overview dd")].map((d) => d.textContent)
      .join("|"));
    await page.waitForFunction((f) => [...document.querySelectorAll("#overview dd")].map((d) => d.textContent)
      .join("|") !== f, { timeout: WAIT }, first);
    ok("live: msg/s " + (await moving()).join(", "));

    step = "route charts";
    await page.waitForFunction((route) => {
      const row = [...document.querySelectorAll("#routes tbody tr")].find((r) => r.cells[0].textContent === route);
      const line = row && row.querySelector("svg polyline");
      if (!line) return false;
      const ys = line.getAttribute("points").split(" ").map((p) => parseFloat(p.split(",")[1]));
      return ys.filter((y) => y < 38).length >= 8;  // 8 seconds with traffic drawn
    }, { timeout: WAIT }, ROUTE);
    ok("charts");

    step = "an escaped topic renders as text";
    await page.waitForFunction((t) => [...document.querySelectorAll("#errors .topic")]
      .some((e) => e.textContent === "topic " + t), { timeout: WAIT }, XSS);
    const imgs = await page.$$eval("#errors img, #routes img, #workers img", (l) => l.length);
    if (imgs || dialogs.length) throw new Error(`markup from data ran: ${imgs} img, dialogs ${JSON.stringify(dialogs)}`);
    ok("escaped");

    step = "screenshot";
    await page.screenshot({ path: env("CONSOLE_SCREENSHOT"), fullPage: true });
    ok("screenshot");

    step = "phone width";
    await page.setViewport({ width: 390, height: 844, isMobile: true });
    await new Promise((r) => setTimeout(r, 300));
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 391) throw new Error("the page is " + wide + " px wide at 390");
    if (process.env.CONSOLE_SCREENSHOT_PHONE) await page.screenshot({ path: process.env.CONSOLE_SCREENSHOT_PHONE });
    await page.setViewport({ width: 1280, height: 900 });
    ok("phone");

    step = "a kill -9 of a worker shows the restart and its reason";
    const before = await page.$eval("#workers tbody tr[data-slot='0']", (r) => ({
      pid: Number(r.cells[2].textContent), restarts: Number(r.cells[9].textContent) }));
    process.kill(before.pid, "SIGKILL");
    await page.waitForFunction((b) => {
      const r = document.querySelector("#workers tbody tr[data-slot='0']");
      const pid = Number(r.cells[2].textContent);
      return pid > 0 && pid !== b.pid && Number(r.cells[9].textContent) === b.restarts + 1 &&
        r.cells[10].textContent.startsWith("signal 9 (SIGKILL)");
    }, { timeout: WAIT }, before);
    ok("restart: " + (await page.$eval("#workers tbody tr[data-slot='0']", (r) => r.cells[10].textContent)));

    step = "the reload button reloads after confirmation";
    const gen = Number(await page.$eval("#o-gen", (e) => e.textContent));
    await page.click("#reload");
    await page.waitForFunction(() => document.getElementById("confirm").open, { timeout: WAIT });
    await page.click("#confirm-cancel");
    await page.waitForFunction(() => !document.getElementById("confirm").open, { timeout: WAIT });
    if (!(await page.$eval("#result", (e) => e.hidden))) throw new Error("cancel ran the reload");
    await page.click("#reload");
    await page.waitForFunction(() => document.getElementById("confirm").open, { timeout: WAIT });
    await page.click("#confirm-ok");
    await page.waitForFunction((g) => document.getElementById("result").textContent ===
      `generation ${g + 1} loaded; replacing the workers one by one` &&
      document.getElementById("o-gen").textContent === String(g + 1), { timeout: WAIT }, gen);
    ok("reload: generation " + gen + " -> " + (gen + 1));

    step = "no dialog fired";
    if (dialogs.length) throw new Error("dialogs: " + JSON.stringify(dialogs));
    ok("no dialog");
  } finally {
    await browser.close();
  }
}

run().then(() => process.exit(0), (e) => {
  console.log("FAIL " + step + ": " + String(e && e.message || e).split("\n")[0]);
  process.exit(1);
});
