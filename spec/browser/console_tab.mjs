// Keeps one console tab open for CONSOLE_SECONDS (the figures of
// spec/e2e/console_figures_spec.lua: the master's CPU with a tab open).
import puppeteer from "puppeteer-core";
import process from "node:process";

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  userDataDir: process.env.CONSOLE_PROFILE,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(process.env.CONSOLE_URL, { waitUntil: "load" });
  await page.waitForSelector("#gate-token");
  await page.type("#gate-token", process.env.CONSOLE_TOKEN);
  await page.click("#gate-form button");
  await page.waitForSelector("#app:not([hidden])");
  console.log("open");
  await new Promise((r) => setTimeout(r, Number(process.env.CONSOLE_SECONDS ?? "30") * 1000));
  const rows = await page.$$eval("#workers tbody tr", (l) => l.length);
  console.log("rows " + rows);
} finally {
  await browser.close();
}
