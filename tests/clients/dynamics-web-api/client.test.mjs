// DynamicsWebApi, a Dataverse client library from npm, pointed at the emulator: it must get what it gets
// from Dynamics 365. Run by `cargo test` (crates/dataverse-emulator/tests/dynamics_web_api.rs), or here
// with DATAVERSE_EMULATOR_BIN set to the emulator binary and `node --test`.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { DynamicsWebApi } from "dynamics-web-api";

let emulator;
let env;
let api;

async function startEmulator() {
  const bin = process.env.DATAVERSE_EMULATOR_BIN;
  assert.ok(bin, "set DATAVERSE_EMULATOR_BIN to the dataverse-emulator binary (cargo build -p dataverse-emulator)");
  const child = spawn(bin, ["--listen", "127.0.0.1:0", "--free"], { stdio: ["ignore", "pipe", "inherit"] });
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the emulator did not announce itself within 15 s")), 15000);
    createInterface({ input: child.stdout }).once("line", (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    child.once("exit", (code) => reject(new Error(`the emulator exited with ${code}`)));
  });
  return { child, announcement: JSON.parse(line) };
}

async function token() {
  const body = new URLSearchParams({
    grant_type: "client_credentials",
    client_id: env.client_id,
    client_secret: env.client_secret,
    scope: `${env.url}/.default`,
  });
  const response = await fetch(env.token_url, { method: "POST", body });
  assert.equal(response.status, 200);
  return (await response.json()).access_token;
}

before(async () => {
  const started = await startEmulator();
  emulator = started.child;
  env = started.announcement;
  api = new DynamicsWebApi({
    serverUrl: env.url,
    dataApi: { version: "9.2" },
    onTokenRefresh: token,
    propagateErrors: true,
  });
});

after(() => {
  emulator?.kill("SIGTERM");
});

async function expectError(promise, status, code) {
  await assert.rejects(promise, (error) => {
    assert.equal(error.status, status, JSON.stringify(error));
    assert.equal(error.code, code, JSON.stringify(error));
    return true;
  });
}

test("create, query, page, update, delete", { timeout: 60000 }, async () => {
  const account = await api.create({ collection: "accounts", data: { name: "Contoso" }, returnRepresentation: true });
  assert.equal(account.name, "Contoso");
  assert.match(account.accountid, /^[0-9a-f-]{36}$/);

  const ids = [];
  for (let i = 0; i < 25; i++) {
    const data = { firstname: `First${i}`, lastname: `Last${String(i).padStart(2, "0")}`, gendercode: (i % 2) + 1, numberofchildren: i };
    if (i === 0) data["parentcustomerid_account@odata.bind"] = `/accounts(${account.accountid})`;
    ids.push(await api.create({ collection: "contacts", data }));
  }
  assert.equal(new Set(ids).size, 25);
  assert.match(ids[0], /^[0-9a-f-]{36}$/, "create returns the new id from OData-EntityId");

  // $select, $filter and $orderby.
  const found = await api.retrieveMultiple({
    collection: "contacts",
    select: ["lastname", "numberofchildren"],
    filter: "numberofchildren ge 20 and gendercode eq 1",
    orderBy: ["numberofchildren desc"],
  });
  assert.deepEqual(found.value.map((c) => c.numberofchildren), [24, 22, 20]);

  // The lookup comes back as _parentcustomerid_value.
  const first = await api.retrieve({ collection: "contacts", key: ids[0], select: ["_parentcustomerid_value"] });
  assert.equal(first._parentcustomerid_value, account.accountid);

  // Paging page by page with nextLink, then all at once.
  const seen = [];
  let page = await api.retrieveMultiple({ collection: "contacts", select: ["lastname"], maxPageSize: 10 });
  let pages = 1;
  seen.push(...page.value.map((c) => c.contactid));
  while (page.oDataNextLink) {
    page = await api.retrieveMultiple({ collection: "contacts", select: ["lastname"], maxPageSize: 10 }, page.oDataNextLink);
    seen.push(...page.value.map((c) => c.contactid));
    pages++;
  }
  assert.equal(pages, 3);
  assert.equal(seen.length, 25);
  assert.equal(new Set(seen).size, 25, "every contact exactly once");
  const all = await api.retrieveAll({ collection: "contacts", select: ["lastname"], maxPageSize: 10 });
  assert.equal(all.value.length, 25);

  // Formatted values.
  const formatted = await api.retrieve({
    collection: "contacts",
    key: ids[1],
    select: ["gendercode"],
    includeAnnotations: "OData.Community.Display.V1.FormattedValue",
  });
  assert.equal(formatted.gendercode, 2);
  assert.equal(formatted["gendercode@OData.Community.Display.V1.FormattedValue"], "Female");
  assert.equal(formatted.gendercode_Formatted, "Female");

  // Update changes the row and its etag.
  const before = await api.retrieve({ collection: "contacts", key: ids[2], select: ["jobtitle"] });
  await api.update({ collection: "contacts", key: ids[2], data: { jobtitle: "Buyer" } });
  const afterUpdate = await api.retrieve({ collection: "contacts", key: ids[2], select: ["jobtitle"] });
  assert.equal(afterUpdate.jobtitle, "Buyer");
  assert.notEqual(afterUpdate["@odata.etag"], before["@odata.etag"]);

  // Update (If-Match: *) of a missing row, as Dataverse answers it.
  await expectError(
    api.update({ collection: "contacts", key: "00000000-0000-0000-0000-000000000001", data: { jobtitle: "X" } }),
    404,
    "0x80040217",
  );
  // Upsert creates.
  const upserted = "11111111-2222-4333-8444-555555555555";
  await api.upsert({ collection: "contacts", key: upserted, data: { lastname: "Upserted" } });
  assert.equal((await api.retrieve({ collection: "contacts", key: upserted, select: ["lastname"] })).lastname, "Upserted");

  // Count.
  assert.equal(await api.count({ collection: "contacts" }), 26);

  // Delete, then the row is gone.
  await api.deleteRecord({ collection: "contacts", key: ids[3] });
  await expectError(api.retrieve({ collection: "contacts", key: ids[3] }), 404, "0x80040217");

  // An unknown column.
  await expectError(api.retrieveMultiple({ collection: "contacts", select: ["new_nothere"] }), 400, "0x80060888");

  // WhoAmI through the function call API.
  const me = await api.callFunction("WhoAmI");
  assert.match(me.UserId, /^[0-9a-f-]{36}$/);
});
