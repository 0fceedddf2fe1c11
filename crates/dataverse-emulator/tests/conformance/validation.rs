//! §8 Errors: the status, code and message Dataverse gives for each kind of bad request.

use crate::{Env, label};
use serde_json::json;

#[tokio::test]
async fn s8_2_unknown_properties_in_bodies_and_queries() {
    let env = Env::start().await;
    env.post("contacts", json!({"lastname": "X", "new_foo": 1})).await.assert_error(
        400,
        "0x80048d19",
        "Error identified in Payload provided by the user for Entity :'contacts', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : Microsoft.OData.ODataException: The property 'new_foo' does not exist on type 'Microsoft.Dynamics.CRM.contact'. Make sure to only use property names that are defined by the type or mark the type as open type.",
    );
    let message = "Could not find a property named 'new_foo' on type 'Microsoft.Dynamics.CRM.contact'.";
    env.get("contacts?$select=new_foo").await.assert_error(400, "0x80060888", message);
    env.get("contacts?$filter=new_foo%20eq%201").await.assert_error(400, "0x80060888", message);
    env.get("contacts?$orderby=new_foo").await.assert_error(400, "0x80060888", message);
    // Names are case sensitive, and the lookup column is read as _x_value.
    env.get("contacts?$select=LastName").await.assert_error(400, "0x80060888", "'LastName'");
    env.get("contacts?$select=parentcustomerid").await.assert_error(400, "0x80060888", "'parentcustomerid'");
}

#[tokio::test]
async fn s8_2_unknown_entity_sets_are_not_found() {
    let env = Env::start().await;
    env.get("Contacts").await.assert_error(404, "0x8006088a", "Resource not found for the segment 'Contacts'.");
}

#[tokio::test]
async fn s8_5_strings_longer_than_their_column_are_refused() {
    let env = Env::start().await;
    env.post("contacts", json!({"lastname": "L".repeat(51)})).await.assert_error(
        400,
        "0x80044331",
        "A validation error occurred.  The length of the 'lastname' attribute of the 'contact' entity exceeded the maximum allowed length of '50'.",
    );
}

#[tokio::test]
async fn s8_5_bad_literals_name_the_expected_type() {
    let env = Env::start().await;
    env.add_column(
        "contact",
        json!({"@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata", "SchemaName": "new_LastSeen", "Format": "DateAndTime", "DisplayName": label("Last seen")}),
    )
    .await;
    env.post("contacts", json!({"lastname": "X", "birthdate": "2023-04-19T08:40:36.076Z"})).await.assert_error(
        400,
        "0x80048d19",
        "Cannot convert the literal '2023-04-19T08:40:36.076Z' to the expected type 'Edm.Date'. ---> System.FormatException: String '2023-04-19T08:40:36.076Z' was not recognized as a valid Edm.Date.",
    );
    env.post("contacts", json!({"lastname": "X", "new_lastseen": "yesterday"})).await.assert_error(
        400,
        "0x80048d19",
        "Cannot convert the literal 'yesterday' to the expected type 'Edm.DateTimeOffset'.",
    );
    env.post("contacts", json!({"lastname": "X", "contactid": "not-a-guid"})).await.assert_error(
        400,
        "0x80048d19",
        "Cannot convert the literal 'not-a-guid' to the expected type 'Edm.Guid'.",
    );
    env.post("contacts", json!({"lastname": "X", "numberofchildren": "Charity"})).await.assert_error(
        400,
        "0x80048d19",
        "Cannot convert the literal 'Charity' to the expected type 'Edm.Int32'.",
    );
    // Good values of the same columns are accepted, and kept to the second.
    let id = env
        .create(
            "contacts",
            json!({"lastname": "X", "birthdate": "1965-05-07", "new_lastseen": "2023-01-01T10:00:00.123+02:00"}),
        )
        .await;
    let row = env.get(&format!("contacts({id})?$select=birthdate,new_lastseen")).await.json();
    assert_eq!(row["birthdate"], "1965-05-07");
    assert_eq!(row["new_lastseen"], "2023-01-01T08:00:00Z");
}

#[tokio::test]
async fn s8_5_choice_values_out_of_range_are_refused() {
    let env = Env::start().await;
    env.post("contacts", json!({"lastname": "X", "gendercode": 5})).await.assert_error(
        400,
        "0x8004431a",
        "The value 5 of 'gendercode' on record of type 'contact' is outside the valid range.",
    );
}

#[tokio::test]
async fn s8_3_records_not_found_name_the_table_and_id() {
    let env = Env::start().await;
    let id = "4a7b2c0e-0000-4000-8000-00000000abcd";
    env.get(&format!("accounts({id})")).await.assert_error(
        404,
        "0x80040217",
        &format!("Entity 'account' With Id = {id} Does Not Exist"),
    );
}

#[tokio::test]
async fn s3_7_odata_v3_guid_literals_are_refused() {
    let env = Env::start().await;
    let reply = env.get("contacts(guid'11a7b0a8-0000-0000-0000-000000000000')").await;
    assert_eq!(reply.status.as_u16(), 400);
    assert!(reply.json()["error"]["message"].as_str().unwrap().starts_with("Unrecognized 'Edm.String' literal"));
}
