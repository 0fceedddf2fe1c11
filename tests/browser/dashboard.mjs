// The dashboard as a new user drives it, in Debian's Chromium through Playwright. Run by
// crates/dynsync/tests/dashboard.rs, a step at a time, while the Rust test does between steps what the user does
// outside the browser (stream profiles, fix a contact in Dynamics):
//
//   node dashboard.mjs <step>        step: connect | flow | runs | replay
//
// Environment: DYNSYNC_URL, DYNSYNC_TOKEN, DYNSYNC_SANDBOX, SCREENSHOTS (a folder), CHROMIUM (default
// /usr/bin/chromium), and per step: DESTINATION (the connect form's values, JSON) and WRONG_SECRET; FLOW_ID and
// FAILED_KEY. Every page visited is checked for console errors and for serious accessibility violations
// (axe-core); each is kept as a screenshot. Exits non-zero, saying what differed, on the first failure.

import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: crates/dynsync/tests/dashboard.rs sets it`);
  return value;
};
const base = env("DYNSYNC_URL");
const shots = env("SCREENSHOTS");
mkdirSync(shots, { recursive: true });

function expect(condition, what) {
  if (!condition) throw new Error(what);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext();
const page = await context.newPage();
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(`${page.url()}: ${m.text()}`); });
page.on("pageerror", (e) => consoleErrors.push(`${page.url()}: ${e.message}`));

/// Checks the page as it is now: no console error so far, no serious accessibility violation; keeps a screenshot.
async function checked(name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  // Evaluated through the DevTools protocol, which the page's Content-Security-Policy does not govern.
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(serious.length === 0, `${name}: accessibility violations: ${JSON.stringify(serious.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target) })), null, 1)}`);
  expect(consoleErrors.length === 0, `${name}: console errors: ${consoleErrors.join("\n")}`);
}

/// The newest run's counts, as its row shows them.
async function newestRun() {
  const cells = await page.$$eval("#runs tbody tr:first-child td", (tds) => tds.map((td) => td.textContent.trim()));
  const [hour, received, written, excluded, failed] = cells;
  return { hour, received, written, excluded, failed };
}

async function signIn() {
  await page.goto(`${base}/flows`);
  expect(page.url().includes("/sign-in"), `an unsigned visitor is sent to the sign-in page, not ${page.url()}`);
  await page.fill("#token", env("DYNSYNC_TOKEN"));
  await page.fill("#sandbox", env("DYNSYNC_SANDBOX"));
  await page.click("main button[type=submit]");
  await page.waitForURL(`${base}/flows`);
}

async function connect() {
  // A wrong token first: the page says so, and nothing else happens.
  await page.goto(`${base}/sign-in`);
  await page.fill("#token", "not-a-token");
  await page.fill("#sandbox", env("DYNSYNC_SANDBOX"));
  await page.click("main button[type=submit]");
  const refused = await page.textContent("#sign-in-problem");
  expect(refused.includes("not one of dynsync's API tokens"), `a wrong token is refused in words: ${refused}`);
  await checked("01-sign-in-refused");

  await signIn();
  await checked("02-flows-empty");
  await page.click("text=Catalog");
  await page.waitForURL(`${base}/catalog`);
  expect(await page.isVisible("text=Audience activation"), "the catalog lists the jobs");
  await checked("03-catalog");

  // Connect Dynamics 365 with a wrong secret: the test on save says what is wrong, and keeps what was typed.
  const destination = JSON.parse(env("DESTINATION"));
  await page.click("text=Connect with Dynamics 365 Client Credentials");
  await page.fill("#name", "Contoso sales");
  for (const [name, value] of Object.entries(destination)) {
    await page.fill(`[name="param.${name}"]`, name === "clientSecret" ? env("WRONG_SECRET") : value);
  }
  await page.click("main button[type=submit]");
  const problem = await page.textContent("#problem");
  expect(/secret/i.test(problem), `a wrong secret is named as the cause: ${problem}`);
  expect(await page.inputValue("#name") === "Contoso sales", "the name typed is kept");
  expect(await page.inputValue('[name="param.clientSecret"]') === "", "the secret is not shown again");
  await checked("04-connect-wrong-secret");

  await page.fill('[name="param.clientSecret"]', destination.clientSecret);
  await page.click("main button[type=submit]");
  await page.waitForURL(`${base}/connections?done=connected`);
  expect((await page.textContent("#done")).startsWith("Connected"), "the connection is Connected");
  expect(await page.isVisible("text=Contoso sales"), "the new connection is listed");
  expect(!(await page.content()).includes(destination.clientSecret), "the secret is nowhere on the page");
  await checked("05-connections");
}

async function flow() {
  await signIn();
  // The destination details, then the flow: audiences with their Mapping ID, attributes onto contact columns.
  await page.click("text=New destination");
  await page.waitForURL(`${base}/targets/new`);
  await page.fill("#name", "Contacts");
  await page.selectOption("#connection", { label: "Contoso sales" });
  await page.fill("#prefix", "new");
  await checked("06-new-destination");
  await page.click("main button[type=submit]");
  await page.waitForURL(/\/flows\/new\?target=/);
  const offered = await page.$$eval("#contact-columns option", (os) => os.map((o) => o.value));
  expect(offered.includes("firstname") && offered.includes("new_gold"), `the environment's contact columns are offered: ${offered.length}`);
  await page.fill("#name", "Loyalty audiences");
  await page.fill('[name="audience.0.id"]', "seg-gold");
  await page.fill('[name="audience.0.name"]', "Gold");
  await page.fill('[name="audience.0.mapping"]', "gold");
  await page.fill('[name="mapping.1.source"]', "person.name.firstName");
  await page.fill('[name="mapping.1.target"]', "firstnme");
  await page.click("#flow-form button[type=submit]");
  // The mistake is shown beside its row, with the column meant.
  const problem = await page.textContent("#mappings .problem");
  expect(problem.includes("firstnme") && problem.includes("firstname"), `the wrong column is named, with the closest: ${problem}`);
  expect(await page.inputValue('[name="audience.0.mapping"]') === "gold", "what was typed stays");
  expect((await page.textContent("#audiences")).includes("new_gold"), "the audience's column is shown");
  await checked("07-flow-with-a-mapping-error");
  await page.fill('[name="mapping.1.target"]', "firstname");
  await page.click("#flow-form button[type=submit]");
  await page.waitForURL(/\/flows\/[0-9a-f-]+\?done=created$/);
  expect((await page.textContent("#done")).startsWith("Created"), "the flow is created");
  await checked("08-flow-created");
}

async function runs() {
  await signIn();
  // Browse: the connection's tables, then the contact table's columns and a preview of its rows.
  await page.click("nav >> text=Connections");
  await page.waitForURL(`${base}/connections`);
  await page.click("text=Tables");
  await page.waitForURL(/\/connections\/[0-9a-f-]+\/tables$/);
  await checked("09-tables");
  await page.click('a[href$="/tables/contact"]');
  await page.waitForSelector("#preview");
  const preview = await page.textContent("#preview");
  expect(preview.includes("Ann") && preview.includes("Cy"), `the preview shows the contacts: ${preview.slice(0, 300)}`);
  expect((await page.textContent("#columns")).includes("lastname"), "and the columns");
  await checked("10-table-preview");
  await page.goto(`${base}/flows`);
  const flow = env("FLOW_ID");
  // The flow is listed with its counts, live.
  await page.waitForSelector(`a[href="/flows/${flow}"]`);
  await checked("11-flows");
  await page.click(`a[href="/flows/${flow}"]`);
  await page.waitForURL(`${base}/flows/${flow}`);
  await page.waitForSelector("#runs");
  const run = await newestRun();
  expect(run.received === "4" && run.written === "3" && run.failed === "1", `the run: 4 received, 3 written, 1 failed: ${JSON.stringify(run)}`);
  // The drill-down: Dataverse's code and message, and what was sent.
  const failed = await page.textContent("#failed");
  expect(failed.includes("Failed records (1)"), `one failed record: ${failed}`);
  expect(failed.includes(env("FAILED_KEY")) && failed.includes("0x80040217"), `the record, by key and code: ${failed}`);
  await page.click("details.failed-record summary");
  expect(await page.isVisible("details.failed-record pre"), "what was sent is shown");
  await checked("12-flow-with-a-failed-record");
}

async function replay() {
  await signIn();
  const flow = env("FLOW_ID");
  await page.goto(`${base}/flows/${flow}`);
  await page.click("#replay");
  await page.waitForURL(`${base}/flows/${flow}?done=replayed`);
  expect((await page.textContent("#done")).startsWith("Replayed"), "the page says the records were replayed");
  const failed = await page.textContent("#failed");
  expect(failed.includes("Failed records (0)"), `no failed record is left: ${failed}`);
  const run = await newestRun();
  expect(run.received === "4" && run.written === "4" && run.failed === "0", `the run now: 4 received, 4 written: ${JSON.stringify(run)}`);
  await checked("13-replayed");
  // The replayed contact's activation data, as Dynamics holds it now.
  await page.click("text=A contact's activation data");
  await page.fill("#contact-id", env("FAILED_KEY"));
  await page.click("main form button[type=submit]");
  await page.waitForSelector("#contact-values");
  const values = await page.textContent("#contact-values");
  expect(values.includes("new_gold") && values.includes("realized") && values.includes("Absent"),
    `the contact holds the audience's status and its name: ${values}`);
  await checked("14-contact-activation-data");
  // Who did what: the connection made in the browser, the flow, its replay.
  await page.click("text=Timeline");
  await page.waitForURL(`${base}/timeline`);
  const changes = await page.textContent("#changes");
  for (const seen of ["Connection Contoso sales", "Flow Loyalty audiences", "replayed", "operator"]) {
    expect(changes.includes(seen), `the timeline shows ${seen}: ${changes}`);
  }
  await checked("15-timeline");
}

const steps = { connect, flow, runs, replay };
const step = steps[process.argv[2]];
try {
  if (!step) throw new Error(`'${process.argv[2]}' is not a step: use connect, flow, runs or replay`);
  await step();
} catch (e) {
  await page.screenshot({ path: `${shots}/failed-${process.argv[2]}.png`, fullPage: true }).catch(() => {});
  console.error(e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
