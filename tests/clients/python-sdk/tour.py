"""Microsoft's Python Dataverse SDK (powerplatform-dataverse-client, from PyPI) against the emulator, over
HTTPS, signed in by azure-identity's ClientSecretCredential with only the authority changed: a tour of the
SDK's public operations, each step checking what Dynamics 365 would give.

Run by `cargo test -p dataverse-emulator --test python_sdk`, or here:
    DATAVERSE_EMULATOR_BIN=target/debug/dataverse-emulator .venv/bin/python tour.py
Prints one line per step (PASS or FAIL with the reason) and, last, a JSON summary line; exits 1 if a step
failed. Only loopback is contacted: MSAL's instance discovery, which would ask login.microsoftonline.com about
an authority it does not know, is either turned off or pointed at the emulator's own answer.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from enum import IntEnum

STEPS = []


def step(function):
    STEPS.append(function)
    return function


def start_emulator(directory):
    binary = os.environ.get("DATAVERSE_EMULATOR_BIN")
    if not binary:
        sys.exit("set DATAVERSE_EMULATOR_BIN to the dataverse-emulator binary (cargo build -p dataverse-emulator)")
    certificate = os.path.join(directory, "emulator.pem")
    child = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--free", "--tls", certificate],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = child.stdout.readline()
    if not line:
        sys.exit(f"the emulator exited with {child.wait()} before announcing itself")
    return child, json.loads(line), certificate


class Tour:
    """What the steps share: the emulator's announcement, the client, and the ids made on the way."""

    def __init__(self, env):
        self.env = env
        self.client = None
        self.credential = None
        self.account = None
        self.contacts = []
        self.table = None
        self.relationship = None


def expect_http_error(call, status):
    from PowerPlatform.Dataverse.core.errors import HttpError

    try:
        call()
    except HttpError as error:
        assert error.status_code == status, f"expected {status}, got {error.status_code}: {error}"
        return error
    raise AssertionError(f"expected an HTTP {status} error, the call succeeded")


def wait_until(condition, what, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {seconds} s")


# ---- sign-in ------------------------------------------------------------------------------------------


@step
def sign_in_with_azure_identity(t):
    from azure.identity import ClientSecretCredential
    from PowerPlatform.Dataverse.client import DataverseClient

    env = t.env
    if os.environ.get("TOUR_SIGN_IN") == "token-endpoint":
        # For comparing emulators without discovery documents: the token endpoint, asked directly.
        t.credential = TokenEndpointCredential(env)
    else:
        t.credential = ClientSecretCredential(
            env["tenant_id"], env["client_id"], env["client_secret"], authority=env["url"], disable_instance_discovery=True
        )
    token = t.credential.get_token(f"{env['url']}/.default")
    assert token.token.count(".") == 2, "a JWT"
    t.client = DataverseClient(env["url"], t.credential)


class TokenEndpointCredential:
    """A credential that posts the client-credentials grant to the announced token endpoint itself."""

    def __init__(self, env):
        self.env = env

    def get_token(self, *scopes, **_):
        import requests
        from azure.core.credentials import AccessToken

        form = {
            "grant_type": "client_credentials",
            "client_id": self.env["client_id"],
            "client_secret": self.env["client_secret"],
            "scope": " ".join(scopes),
        }
        answer = requests.post(self.env["token_url"], data=form, timeout=30).json()
        return AccessToken(answer["access_token"], int(time.time()) + int(answer["expires_in"]))


@step
def sign_in_with_msal_and_instance_discovery(t):
    import msal

    env = t.env
    app = msal.ConfidentialClientApplication(
        env["client_id"],
        client_credential=env["client_secret"],
        authority=f"{env['url']}/{env['tenant_id']}",
        instance_discovery=f"{env['url']}/common/discovery/instance",
    )
    answer = app.acquire_token_for_client(scopes=[f"{env['url']}/.default"])
    assert "access_token" in answer, answer


@step
def a_wrong_secret_is_refused_by_name(t):
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential

    env = t.env
    wrong = ClientSecretCredential(
        env["tenant_id"], env["client_id"], "not-the-secret", authority=env["url"], disable_instance_discovery=True
    )
    try:
        wrong.get_token(f"{env['url']}/.default")
    except ClientAuthenticationError as error:
        assert "AADSTS7000215" in str(error), str(error)
        return
    raise AssertionError("a wrong secret got a token")


# ---- records -------------------------------------------------------------------------------------------


@step
def create_and_get_a_record(t):
    t.account = t.client.records.create("account", {"name": "Contoso", "accountnumber": "ACC-1"})
    got = t.client.records.get("account", t.account, select=["name", "accountnumber"])
    assert got["name"] == "Contoso" and got["accountnumber"] == "ACC-1", dict(got)


@step
def update_a_record(t):
    t.client.records.update("account", t.account, {"telephone1": "555-0100"})
    got = t.client.records.get("account", t.account, select=["telephone1"])
    assert got["telephone1"] == "555-0100", dict(got)


@step
def create_many_records_at_once(t):
    rows = [
        {"firstname": f"First{i}", "lastname": f"Last{i:02}", "numberofchildren": i, "gendercode": i % 2 + 1}
        for i in range(30)
    ]
    rows[0]["parentcustomerid_account@odata.bind"] = f"/accounts({t.account})"
    t.contacts = t.client.records.create("contact", rows)
    assert len(t.contacts) == 30 and len(set(t.contacts)) == 30, t.contacts


@step
def update_many_records_with_one_change(t):
    t.client.records.update("contact", t.contacts[:10], {"jobtitle": "Buyer"})
    found = t.client.records.list("contact", filter="jobtitle eq 'Buyer'", select=["contactid"])
    assert sorted(r["contactid"] for r in found) == sorted(t.contacts[:10])


@step
def update_many_records_each_its_own_change(t):
    t.client.records.update("contact", t.contacts[:3], [{"jobtitle": f"Title{i}"} for i in range(3)])
    for i, contact in enumerate(t.contacts[:3]):
        assert t.client.records.get("contact", contact, select=["jobtitle"])["jobtitle"] == f"Title{i}"


@step
def list_with_filter_select_and_order(t):
    found = t.client.records.list(
        "contact",
        filter="numberofchildren ge 26 and gendercode eq 1",
        select=["numberofchildren"],
        orderby=["numberofchildren desc"],
    )
    assert [r["numberofchildren"] for r in found] == [28, 26], [dict(r) for r in found]


@step
def list_all_records_over_several_pages(t):
    found = t.client.records.list("contact", select=["lastname"], page_size=7)
    ids = [r["contactid"] for r in found]
    assert len(ids) == 30 and len(set(ids)) == 30, len(ids)


@step
def list_page_by_page(t):
    pages = list(t.client.records.list_pages("contact", select=["lastname"], page_size=10))
    assert [len(p.records) for p in pages] == [10, 10, 10], [len(p.records) for p in pages]


@step
def list_with_top_and_count(t):
    found = t.client.records.list("contact", select=["lastname"], orderby=["lastname"], top=5)
    assert [r["lastname"] for r in found] == [f"Last{i:02}" for i in range(5)], [dict(r) for r in found]


@step
def retrieve_with_formatted_values_and_a_lookup(t):
    got = t.client.records.retrieve(
        "contact",
        t.contacts[1],
        select=["gendercode", "_parentcustomerid_value"],
        include_annotations="OData.Community.Display.V1.FormattedValue",
    )
    assert got["gendercode@OData.Community.Display.V1.FormattedValue"] == "Female", dict(got)
    first = t.client.records.get("contact", t.contacts[0], select=["_parentcustomerid_value"])
    assert first["_parentcustomerid_value"] == t.account, dict(first)


@step
def query_builder(t):
    from PowerPlatform.Dataverse.models import filters

    result = (
        t.client.query.builder("contact")
        .select("lastname", "numberofchildren")
        .where(filters.eq("gendercode", 2))
        .order_by("numberofchildren")
        .top(3)
        .execute()
    )
    assert [r["numberofchildren"] for r in result] == [1, 3, 5], [dict(r) for r in result]


@step
def sql_select(t):
    rows = t.client.query.sql(
        "SELECT TOP 3 lastname, numberofchildren FROM contact WHERE numberofchildren >= 10 ORDER BY numberofchildren DESC"
    )
    assert [r["numberofchildren"] for r in rows] == [29, 28, 27], [dict(r) for r in rows]


@step
def fetchxml_over_several_pages(t):
    xml = (
        "<fetch count='8'><entity name='contact'><attribute name='lastname'/><attribute name='contactid'/>"
        "<order attribute='lastname'/>"
        "<filter type='or'><condition attribute='gendercode' operator='eq' value='1'/>"
        "<condition attribute='numberofchildren' operator='lt' value='4'/></filter></entity></fetch>"
    )
    rows = t.client.query.fetchxml(xml).execute()
    names = [r["lastname"] for r in rows]
    expected = sorted(f"Last{i:02}" for i in range(30) if i % 2 == 0 or i < 4)
    assert names == expected, names


@step
def fetchxml_with_a_linked_table(t):
    xml = (
        "<fetch><entity name='contact'><attribute name='lastname'/>"
        "<link-entity name='account' from='accountid' to='parentcustomerid' alias='a' link-type='inner'>"
        "<attribute name='name'/></link-entity></entity></fetch>"
    )
    rows = list(t.client.query.fetchxml(xml).execute())
    assert len(rows) == 1 and rows[0]["a.name"] == "Contoso", [dict(r) for r in rows]


@step
def delete_one_record(t):
    gone = t.contacts.pop()
    t.client.records.delete("contact", gone)
    expect_http_error(lambda: t.client.records.get("contact", gone), 404)


@step
def delete_several_records_one_by_one(t):
    gone, t.contacts = t.contacts[-3:], t.contacts[:-3]
    t.client.records.delete("contact", gone, use_bulk_delete=False)
    for contact in gone:
        expect_http_error(lambda: t.client.records.get("contact", contact), 404)


@step
def bulk_delete_runs_as_a_job(t):
    gone, t.contacts = t.contacts[-5:], t.contacts[:-5]
    job = t.client.records.delete("contact", gone)
    assert job, "BulkDelete returns its job id"

    def finished():
        try:
            for contact in gone:
                t.client.records.get("contact", contact, select=["contactid"])
            return False
        except Exception:
            return all(not_found(t, contact) for contact in gone)

    wait_until(finished, "the bulk delete job")


def not_found(t, contact):
    from PowerPlatform.Dataverse.core.errors import HttpError

    try:
        t.client.records.get("contact", contact, select=["contactid"])
        return False
    except HttpError as error:
        return error.status_code == 404


@step
def a_missing_record_is_404_with_dataverse_code(t):
    error = expect_http_error(lambda: t.client.records.get("contact", "00000000-0000-0000-0000-000000000001"), 404)
    assert "0x80040217" in (str(error.code) + str(error.subcode) + str(error.details) + str(error)), vars(error)


# ---- tables and columns --------------------------------------------------------------------------------


class Stage(IntEnum):
    DRAFT = 1
    LIVE = 2


@step
def create_a_table_with_columns(t):
    info = t.client.tables.create(
        "new_Tour",
        {
            "new_Code": {"type": "string", "max_length": 40},
            "new_Visits": "int",
            "new_Price": "decimal",
            "new_When": "datetime",
            "new_Done": "bool",
            "new_Stage": Stage,
        },
        display_name="Tour",
    )
    assert info["entity_set_name"] == "new_tours", dict(info)
    t.table = info


@step
def get_and_list_tables(t):
    got = t.client.tables.get("new_Tour")
    assert got is not None and got["logical_name"] == "new_tour", got
    names = [table["LogicalName"] for table in t.client.tables.list()]
    assert "new_tour" in names and "contact" in names, names[:20]
    filtered = t.client.tables.list(filter="SchemaName eq 'Account'")
    assert [table["LogicalName"] for table in filtered] == ["account"], filtered


@step
def write_and_read_the_new_table(t):
    row = t.client.records.create(
        "new_tour", {"new_name": "First", "new_code": "T-1", "new_visits": 3, "new_price": 12.5, "new_stage": 2, "new_done": True}
    )
    got = t.client.records.get("new_tour", row, select=["new_code", "new_visits", "new_price", "new_stage", "new_done"])
    assert (got["new_code"], got["new_visits"], got["new_price"], got["new_stage"], got["new_done"]) == (
        "T-1", 3, 12.5, 2, True
    ), dict(got)


@step
def add_columns(t):
    created = t.client.tables.add_columns("new_Tour", {"new_Notes": "memo", "new_Rating": "float"})
    assert len(created) == 2, created
    columns = [c["LogicalName"] for c in t.client.tables.list_columns("new_Tour")]
    assert "new_notes" in columns and "new_rating" in columns, columns


@step
def read_typed_column_metadata(t):
    column = t.client.tables.get_column("new_Tour", "new_code", typed=True)
    assert column is not None, "the column is found"
    text = json.dumps(column if isinstance(column, dict) else vars(column), default=str)
    assert "new_code" in text and "40" in text, text[:500]
    typed = t.client.tables.list_columns("new_Tour", typed=True)
    assert len(typed) >= 8, len(typed)


@step
def update_a_column(t):
    t.client.tables.update_column("new_Tour", "new_code", {"display_name": "Tour code", "max_length": 60})
    column = t.client.tables.get_column("new_Tour", "new_code")
    text = json.dumps(column if isinstance(column, dict) else vars(column), default=str)
    assert "Tour code" in text and "60" in text, text[:800]


@step
def remove_a_column(t):
    t.client.tables.remove_columns("new_Tour", ["new_Rating"])
    columns = [c["LogicalName"] for c in t.client.tables.list_columns("new_Tour")]
    assert "new_rating" not in columns, columns


@step
def create_and_list_an_alternate_key(t):
    t.client.tables.create_alternate_key("new_Tour", "new_code_key", ["new_code"])
    keys = t.client.tables.get_alternate_keys("new_Tour")
    assert [k.schema_name.lower() for k in keys] == ["new_code_key"], keys
    t.key = keys[0]


@step
def upsert_by_alternate_key(t):
    from PowerPlatform.Dataverse.models.upsert import UpsertItem

    t.client.records.upsert("new_tour", [UpsertItem(alternate_key={"new_code": "T-2"}, record={"new_name": "Second"})])
    t.client.records.upsert("new_tour", [UpsertItem(alternate_key={"new_code": "T-2"}, record={"new_visits": 7})])
    rows = t.client.records.list("new_tour", filter="new_code eq 'T-2'", select=["new_name", "new_visits"])
    assert [(r["new_name"], r["new_visits"]) for r in rows] == [("Second", 7)], [dict(r) for r in rows]


@step
def upsert_many_by_alternate_key(t):
    from PowerPlatform.Dataverse.models.upsert import UpsertItem

    items = [UpsertItem(alternate_key={"new_code": f"T-{i}"}, record={"new_name": f"Tour {i}"}) for i in range(2, 6)]
    t.client.records.upsert("new_tour", items)
    rows = t.client.records.list("new_tour", select=["new_code", "new_name"], orderby=["new_code"])
    assert [(r["new_code"], r["new_name"]) for r in rows] == [("T-1", "First")] + [
        (f"T-{i}", f"Tour {i}") for i in range(2, 6)
    ], [dict(r) for r in rows]


@step
def delete_an_alternate_key(t):
    t.client.tables.delete_alternate_key("new_Tour", t.key.metadata_id)
    assert t.client.tables.get_alternate_keys("new_Tour") == []


@step
def create_a_lookup_and_bind_through_it(t):
    t.client.tables.create_lookup_field("contact", "new_TourId", "new_tour")
    tour = t.client.records.list("new_tour", filter="new_code eq 'T-1'", select=["new_tourid"]).records[0]["new_tourid"]
    bind = t.client.query.odata_bind("contact", "new_tour", tour)
    t.client.records.update("contact", t.contacts[0], bind)
    got = t.client.records.get("contact", t.contacts[0], select=["_new_tourid_value"])
    assert got["_new_tourid_value"] == tour, dict(got)


@step
def create_a_one_to_many_relationship(t):
    from PowerPlatform.Dataverse.models.relationship import (
        LookupAttributeMetadata,
        OneToManyRelationshipMetadata,
    )
    from PowerPlatform.Dataverse.models.labels import Label, LocalizedLabel

    lookup = LookupAttributeMetadata(
        schema_name="new_AccountId",
        display_name=Label(localized_labels=[LocalizedLabel(label="Account", language_code=1033)]),
    )
    relationship = OneToManyRelationshipMetadata(
        schema_name="new_account_new_tour",
        referenced_entity="account",
        referencing_entity="new_tour",
        referenced_attribute="accountid",
    )
    created = t.client.tables.create_one_to_many_relationship(lookup, relationship)
    t.relationship = created.relationship_id
    assert t.relationship, created


@step
def get_and_list_relationships(t):
    got = t.client.tables.get_relationship("new_account_new_tour")
    assert got is not None and got.referenced_entity == "account" and got.referencing_entity == "new_tour", got
    every = t.client.tables.list_relationships()
    assert any(r["SchemaName"] == "new_account_new_tour" for r in every), len(every)
    mine = t.client.tables.list_table_relationships("new_tour")
    assert any(r["SchemaName"] == "new_account_new_tour" for r in mine), mine


@step
def create_a_many_to_many_relationship(t):
    from PowerPlatform.Dataverse.models.relationship import ManyToManyRelationshipMetadata

    created = t.client.tables.create_many_to_many_relationship(
        ManyToManyRelationshipMetadata(
            schema_name="new_tour_contact", entity1_logical_name="new_tour", entity2_logical_name="contact"
        )
    )
    assert created.relationship_id, created


@step
def delete_a_relationship(t):
    t.client.tables.delete_relationship(t.relationship)
    assert t.client.tables.get_relationship("new_account_new_tour") is None


# ---- batch ---------------------------------------------------------------------------------------------


@step
def a_batch_of_reads_and_writes(t):
    batch = t.client.batch.new()
    batch.records.create("account", {"name": "Batched"})
    batch.records.update("account", t.account, {"telephone1": "555-0199"})
    batch.records.get("account", t.account, select=["telephone1"])
    batch.query.sql("SELECT TOP 1 name FROM account ORDER BY name")
    result = batch.execute()
    assert not result.has_errors, [(r.status_code, r.error_message) for r in result.failed]
    assert len(result.entity_ids) >= 1, result


@step
def a_changeset_commits_together(t):
    batch = t.client.batch.new()
    with batch.changeset() as changes:
        changes.records.create("account", {"name": "In changeset 1"})
        changes.records.create("account", {"name": "In changeset 2"})
    result = batch.execute()
    assert not result.has_errors and len(result.entity_ids) == 2, [(r.status_code, r.error_message) for r in result.responses]


@step
def a_failed_changeset_leaves_nothing(t):
    batch = t.client.batch.new()
    with batch.changeset() as changes:
        changes.records.create("account", {"name": "Never kept"})
        changes.records.create("account", {"name": "Bad", "nosuchcolumn": 1})
    result = batch.execute(continue_on_error=True)
    assert result.has_errors
    assert len(t.client.records.list("account", filter="name eq 'Never kept'")) == 0


@step
def sql_columns_and_odata_helpers(t):
    columns = t.client.query.sql_columns("new_tour")
    assert any(c["name"] == "new_code" for c in columns), columns
    assert "new_code" in t.client.query.odata_select("new_tour")


@step
def delete_the_table(t):
    # What refers to the table goes first, as the environment asks: the lookup on contact, the many-to-many.
    for relationship in t.client.tables.list_table_relationships("new_tour"):
        if relationship["SchemaName"] in ("new_tour_contact_new_TourId", "new_tour_contact"):
            t.client.tables.delete_relationship(relationship["MetadataId"])
    t.client.tables.delete("new_Tour")
    assert t.client.tables.get("new_Tour") is None


def main():
    with tempfile.TemporaryDirectory() as directory:
        child, env, certificate = start_emulator(directory)
        # requests (the SDK) and azure-core (azure-identity) trust the emulator's certificate through this.
        os.environ["REQUESTS_CA_BUNDLE"] = certificate
        os.environ["SSL_CERT_FILE"] = certificate
        tour = Tour(env)
        passed, failed = [], []
        try:
            for function in STEPS:
                name = function.__name__
                started = time.monotonic()
                try:
                    function(tour)
                    passed.append(name)
                    print(f"PASS {name} ({time.monotonic() - started:.2f} s)", flush=True)
                except Exception as error:  # every step reports, so one run shows every problem
                    failed.append(name)
                    reason = "".join(traceback.format_exception_only(type(error), error)).strip()
                    print(f"FAIL {name}: {reason[:2000]}", flush=True)
                    if os.environ.get("TOUR_TRACEBACK"):
                        traceback.print_exc()
                if name == "sign_in_with_azure_identity" and failed:
                    break
        finally:
            child.terminate()
            child.wait(timeout=10)
        print(json.dumps({"passed": len(passed), "steps": len(STEPS), "failed": failed}))
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
