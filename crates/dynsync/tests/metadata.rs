//! The `dataverse` client's table metadata against the emulator, as flow validation uses it: columns and types of
//! `contact`, the cache, and custom columns created through it.

use dataverse::{ColumnType, NewColumn, NewColumnType};
use dataverse_emulator::{CostModel, EmulatorConfig};

use dynsync::demo::emulator_client as client;

#[tokio::test]
async fn contact_columns_come_with_their_types() {
    let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() }.start().await.unwrap();
    let client = client(&emulator);
    let contact = client.table("contact").await.unwrap();
    assert_eq!(contact.entity_set_name, "contacts");
    assert_eq!(contact.primary_id, "contactid");
    assert_eq!(contact.column("firstname").unwrap().kind, ColumnType::String { max_length: Some(50) });
    assert_eq!(contact.column("birthdate").unwrap().kind, ColumnType::DateTime { date_only: true });
    assert_eq!(contact.column("donotemail").unwrap().kind, ColumnType::Boolean);
    assert_eq!(contact.column("gendercode").unwrap().kind, ColumnType::Picklist);
    assert!(matches!(contact.column("description").unwrap().kind, ColumnType::Memo { max_length: Some(_) }));
    assert!(!contact.column("fullname").unwrap().valid_for_update, "fullname is computed");
    assert!(contact.column("contactid").unwrap().is_primary_id);

    // A column added through the client shows at once; one added behind its back shows after invalidation.
    let gold = NewColumn {
        schema_name: "new_GoldMembers".into(),
        display_name: "Gold members".into(),
        kind: NewColumnType::String { max_length: 20 },
    };
    client.create_column("contact", &gold).await.unwrap();
    let contact = client.table("contact").await.unwrap();
    let column = contact.column("new_goldmembers").unwrap();
    assert_eq!(column.schema_name, "new_GoldMembers");
    assert_eq!(column.kind, ColumnType::String { max_length: Some(20) });
    assert!(column.is_custom);

    let other = self::client(&emulator);
    let tier = NewColumn {
        schema_name: "cr8a3_Tier".into(),
        display_name: "Tier".into(),
        kind: NewColumnType::Picklist { options: vec!["Gold".into(), "Silver".into()] },
    };
    other.create_column("contact", &tier).await.unwrap();
    assert!(client.table("contact").await.unwrap().column("cr8a3_tier").is_none(), "cached");
    client.invalidate_table("contact");
    assert_eq!(client.table("contact").await.unwrap().column("cr8a3_tier").unwrap().kind, ColumnType::Picklist);

    for (schema_name, kind, expected) in [
        ("new_Points", NewColumnType::Integer { min: 0, max: 1000 }, ColumnType::Integer),
        ("new_JoinedOn", NewColumnType::DateTime { date_only: false }, ColumnType::DateTime { date_only: false }),
        (
            "new_Vip",
            NewColumnType::Boolean { true_label: "VIP".into(), false_label: "Regular".into() },
            ColumnType::Boolean,
        ),
    ] {
        let column = NewColumn { schema_name: schema_name.into(), display_name: schema_name.into(), kind };
        client.create_column("contact", &column).await.unwrap();
        let contact = client.table("contact").await.unwrap();
        assert_eq!(contact.column(&schema_name.to_lowercase()).unwrap().kind, expected);
    }

    // Without a publisher prefix, Dataverse refuses the column, and the error says why.
    let bare = NewColumn {
        schema_name: "Tier".into(),
        display_name: "Tier".into(),
        kind: NewColumnType::String { max_length: 10 },
    };
    let error = client.create_column("contact", &bare).await.unwrap_err();
    assert!(error.to_string().contains("customization prefix"), "{error}");
    assert!(client.table("nosuchtable").await.is_err());
}
