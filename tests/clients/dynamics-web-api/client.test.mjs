// DynamicsWebApi, a Dataverse client library from npm, pointed at the emulator: it must get what it gets
// from Dynamics 365. Run by `cargo test` (crates/dataverse-emulator/tests/clients.rs), or here with
// DATAVERSE_EMULATOR_BIN set to the emulator binary and `node --test`. With DATAVERSE_EMULATOR_ANNOUNCEMENT
// set to a running emulator's announcement line (and NODE_EXTRA_CA_CERTS to its certificate, for --tls), the
// tests use that emulator instead of starting one.

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
  if (process.env.DATAVERSE_EMULATOR_ANNOUNCEMENT) {
    env = JSON.parse(process.env.DATAVERSE_EMULATOR_ANNOUNCEMENT);
  } else {
    const started = await startEmulator();
    emulator = started.child;
    env = started.announcement;
  }
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

let account;
let ids = [];

test("create returns the new row and its id", { timeout: 60000 }, async () => {
  account = await api.create({ collection: "accounts", data: { name: "Contoso" }, returnRepresentation: true });
  assert.equal(account.name, "Contoso");
  assert.match(account.accountid, /^[0-9a-f-]{36}$/);

  for (let i = 0; i < 25; i++) {
    const data = { firstname: `First${i}`, lastname: `Last${String(i).padStart(2, "0")}`, gendercode: (i % 2) + 1, numberofchildren: i };
    if (i === 0) data["parentcustomerid_account@odata.bind"] = `/accounts(${account.accountid})`;
    ids.push(await api.create({ collection: "contacts", data }));
  }
  assert.equal(new Set(ids).size, 25);
  assert.match(ids[0], /^[0-9a-f-]{36}$/, "create returns the new id from OData-EntityId");
});

test("$select, $filter and $orderby", { timeout: 60000 }, async () => {
  // $select, $filter and $orderby.
  const found = await api.retrieveMultiple({
    collection: "contacts",
    select: ["lastname", "numberofchildren"],
    filter: "numberofchildren ge 20 and gendercode eq 1",
    orderBy: ["numberofchildren desc"],
  });
  assert.deepEqual(found.value.map((c) => c.numberofchildren), [24, 22, 20]);

});

test("a lookup comes back as _name_value", { timeout: 60000 }, async () => {
  const first = await api.retrieve({ collection: "contacts", key: ids[0], select: ["_parentcustomerid_value"] });
  assert.equal(first._parentcustomerid_value, account.accountid);

});

test("paging page by page with nextLink", { timeout: 60000 }, async () => {
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
});

test("retrieveAll follows every nextLink", { timeout: 60000 }, async () => {
  const all = await api.retrieveAll({ collection: "contacts", select: ["lastname"], maxPageSize: 10 });
  assert.equal(all.value.length, 25);
});

test("formatted values", { timeout: 60000 }, async () => {
  const formatted = await api.retrieve({
    collection: "contacts",
    key: ids[1],
    select: ["gendercode"],
    includeAnnotations: "OData.Community.Display.V1.FormattedValue",
  });
  assert.equal(formatted.gendercode, 2);
  assert.equal(formatted["gendercode@OData.Community.Display.V1.FormattedValue"], "Female");
  assert.equal(formatted.gendercode_Formatted, "Female");

});

test("update changes the row and its etag", { timeout: 60000 }, async () => {
  const before = await api.retrieve({ collection: "contacts", key: ids[2], select: ["jobtitle"] });
  await api.update({ collection: "contacts", key: ids[2], data: { jobtitle: "Buyer" } });
  const afterUpdate = await api.retrieve({ collection: "contacts", key: ids[2], select: ["jobtitle"] });
  assert.equal(afterUpdate.jobtitle, "Buyer");
  assert.notEqual(afterUpdate["@odata.etag"], before["@odata.etag"]);

});

test("update of a missing row is 404", { timeout: 60000 }, async () => {
  await expectError(
    api.update({ collection: "contacts", key: "00000000-0000-0000-0000-000000000001", data: { jobtitle: "X" } }),
    404,
    "0x80040217",
  );
});

test("upsert creates", { timeout: 60000 }, async () => {
  const upserted = "11111111-2222-4333-8444-555555555555";
  await api.upsert({ collection: "contacts", key: upserted, data: { lastname: "Upserted" } });
  assert.equal((await api.retrieve({ collection: "contacts", key: upserted, select: ["lastname"] })).lastname, "Upserted");

});

test("count", { timeout: 60000 }, async () => {
  assert.equal(await api.count({ collection: "contacts" }), 26);

});

test("delete, then the row is gone", { timeout: 60000 }, async () => {
  await api.deleteRecord({ collection: "contacts", key: ids[3] });
  await expectError(api.retrieve({ collection: "contacts", key: ids[3] }), 404, "0x80040217");

});

test("an unknown column is 400 with Dataverse's code", { timeout: 60000 }, async () => {
  await expectError(api.retrieveMultiple({ collection: "contacts", select: ["new_nothere"] }), 400, "0x80060888");

});

test("WhoAmI through the function call API", { timeout: 60000 }, async () => {
  const me = await api.callFunction("WhoAmI");
  assert.match(me.UserId, /^[0-9a-f-]{36}$/);
});

test("FetchXML page by page with the paging cookie, and all at once", { timeout: 60000 }, async () => {
  const fetchXml =
    "<fetch count='10'><entity name='contact'><attribute name='lastname'/><order attribute='lastname'/></entity></fetch>";
  const first = await api.fetch({ collection: "contacts", fetchXml });
  assert.equal(first.value.length, 10);
  assert.ok(first.PagingInfo?.cookie, "a paging cookie for the next page");
  const second = await api.fetch({
    collection: "contacts",
    fetchXml,
    pageNumber: first.PagingInfo.nextPage,
    pagingCookie: first.PagingInfo.cookie,
  });
  assert.equal(second.value.length, 10);
  assert.ok(second.value[0].lastname > first.value[9].lastname, "the second page follows the first");
  const all = await api.fetchAll({ collection: "contacts", fetchXml });
  const names = all.value.map((c) => c.lastname);
  assert.equal(names.length, 25);
  assert.deepEqual(names, [...names].sort());
});

test("change tracking: the delta link gives what changed since", { timeout: 60000 }, async () => {
  const initial = await api.retrieveAll({ collection: "accounts", select: ["name"], trackChanges: true });
  assert.ok(initial.oDataDeltaLink, "a delta link");
  assert.ok(initial.oDataDeltaLink.startsWith(env.url), `the delta link is on ${env.url}: ${initial.oDataDeltaLink}`);
  await api.create({ collection: "accounts", data: { name: "Fabrikam" } });
  const changes = await api.retrieveMultiple({ collection: "accounts", select: ["name"] }, initial.oDataDeltaLink);
  assert.deepEqual(
    changes.value.map((a) => a.name),
    ["Fabrikam"],
  );
});

test("a table's metadata", { timeout: 60000 }, async () => {
  const contact = await api.retrieveEntity({ key: "LogicalName='contact'", select: ["LogicalName", "EntitySetName"] });
  assert.equal(contact.EntitySetName, "contacts");
});

test("a batch of requests", { timeout: 60000 }, async () => {
  api.startBatch();
  api.create({ collection: "accounts", data: { name: "In batch" } });
  api.retrieveMultiple({ collection: "accounts", select: ["name"], filter: "name eq 'Contoso'" });
  const [created, found] = await api.executeBatch();
  assert.match(created, /^[0-9a-f-]{36}$/);
  assert.equal(found.value.length, 1);
});
