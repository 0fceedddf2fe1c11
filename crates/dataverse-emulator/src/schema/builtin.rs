//! The standard tables every environment has, with the columns, types and option values Microsoft documents
//! for them (contact, lead, account, annotation for notes, and systemuser for owners and callers).

use super::*;

/// Stable ids for built-in metadata, so that they stay the same across restarts and instances.
pub(crate) fn metadata_id(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("dataverse-emulator/{name}").as_bytes())
}

fn pascal(logical_name: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in logical_name.chars() {
        if c == '_' {
            out.push(c);
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) struct TableBuilder {
    table: Table,
}

impl TableBuilder {
    pub(crate) fn new(
        logical_name: &str,
        entity_set_name: &str,
        display: (&str, &str),
        primary_name: &str,
        otc: i32,
    ) -> Self {
        let primary_id = format!("{logical_name}id");
        let mut builder = TableBuilder {
            table: Table {
                logical_name: logical_name.into(),
                schema_name: pascal(logical_name),
                entity_set_name: entity_set_name.into(),
                display_name: display.0.into(),
                display_collection_name: display.1.into(),
                description: String::new(),
                primary_id: primary_id.clone(),
                primary_name: primary_name.into(),
                metadata_id: metadata_id(logical_name),
                object_type_code: otc,
                is_custom: false,
                ownership: "UserOwned".into(),
                // Dynamics 365 Sales environments track changes on its core tables; others start without.
                change_tracking_enabled: matches!(logical_name, "contact" | "account" | "lead"),
                is_private: false,
                is_activity: false,
                attributes: Vec::new(),
                keys: Vec::new(),
                relationships: Vec::new(),
                many_to_many: Vec::new(),
            },
        };
        builder = builder.attr(&primary_id, display.0, AttributeKind::Uniqueidentifier).system_required().create_only();
        builder
    }

    pub(crate) fn attr(mut self, logical_name: &str, display: &str, kind: AttributeKind) -> Self {
        let table = &self.table.logical_name;
        self.table.attributes.push(Attribute {
            logical_name: logical_name.into(),
            schema_name: pascal(logical_name),
            display_name: display.into(),
            metadata_id: metadata_id(&format!("{table}.{logical_name}")),
            kind,
            required: RequiredLevel::None,
            is_custom: false,
            valid_for_create: true,
            valid_for_update: true,
            description: String::new(),
            other_labels: Vec::new(),
        });
        self
    }

    /// The logical name of the table being built.
    pub(crate) fn logical_name(&self) -> &str {
        &self.table.logical_name
    }

    /// Names the primary key otherwise than `<table>id`, as activity tables name theirs `activityid`.
    pub(crate) fn primary_key(mut self, logical_name: &str) -> Self {
        let table = self.table.logical_name.clone();
        let key = self.table.attributes.first_mut().expect("the primary key is the first attribute");
        key.logical_name = logical_name.into();
        key.schema_name = pascal(logical_name);
        key.metadata_id = metadata_id(&format!("{table}.{logical_name}"));
        self.table.primary_id = logical_name.into();
        self
    }

    /// Sets the table's schema name where it is not its logical name Pascal-cased (`ActivityPointer`).
    pub(crate) fn schema_name(mut self, schema_name: &str) -> Self {
        self.table.schema_name = schema_name.into();
        self
    }

    /// Marks the table an activity table (`IsActivity`).
    pub(crate) fn activity(mut self) -> Self {
        self.table.is_activity = true;
        self
    }

    /// Sets the default of the last choice column added (`DefaultFormValue`).
    pub(crate) fn default_option(mut self, value: i32) -> Self {
        if let AttributeKind::Picklist { default, .. } = &mut self.last().kind {
            *default = Some(value);
        }
        self
    }

    fn last(&mut self) -> &mut Attribute {
        self.table.attributes.last_mut().expect("an attribute was added first")
    }

    pub(crate) fn required(mut self, level: RequiredLevel) -> Self {
        self.last().required = level;
        self
    }
    pub(crate) fn system_required(self) -> Self {
        self.required(RequiredLevel::SystemRequired)
    }
    pub(crate) fn read_only(mut self) -> Self {
        let a = self.last();
        a.valid_for_create = false;
        a.valid_for_update = false;
        self
    }
    fn create_only(mut self) -> Self {
        self.last().valid_for_update = false;
        self
    }

    pub(crate) fn description(mut self, text: &str) -> Self {
        self.table.description = text.into();
        self
    }

    /// The columns the platform keeps on every table: audit stamps, owner, row version, import helpers, and
    /// the state/status pair with the given options (none for a table without state, such as `annotation`).
    pub(crate) fn standard_columns(self, states: &[(i32, &str, i32)], statuses: &[(i32, &str, i32)]) -> Self {
        let user_owned = self.table.ownership == "UserOwned";
        let mut b = self
            .attr("createdon", "Created On", AttributeKind::date_time())
            .read_only()
            .attr("modifiedon", "Modified On", AttributeKind::date_time())
            .read_only()
            .attr("createdby", "Created By", AttributeKind::lookup("systemuser", "createdby"))
            .read_only()
            .attr("modifiedby", "Modified By", AttributeKind::lookup("systemuser", "modifiedby"))
            .read_only()
            .attr("versionnumber", "Version Number", AttributeKind::BigInt)
            .read_only()
            .attr("overriddencreatedon", "Record Created On", AttributeKind::date_only())
            .create_only()
            .attr("importsequencenumber", "Import Sequence Number", AttributeKind::integer())
            .create_only();
        if !states.is_empty() {
            b = b
                .attr(
                    "statecode",
                    "Status",
                    AttributeKind::State {
                        options: states.iter().map(|(v, l, status)| OptionValue::related(*v, l, *status)).collect(),
                    },
                )
                .system_required()
                .attr(
                    "statuscode",
                    "Status Reason",
                    AttributeKind::Status {
                        options: statuses.iter().map(|(v, l, state)| OptionValue::related(*v, l, *state)).collect(),
                    },
                );
        }
        if user_owned {
            b = b
                .attr(
                    "ownerid",
                    "Owner",
                    AttributeKind::Lookup {
                        lookup_type: LookupType::Owner,
                        targets: vec![LookupTarget {
                            table: "systemuser".into(),
                            navigation_property: "ownerid".into(),
                        }],
                    },
                )
                .system_required();
        }
        b
    }

    /// `fullname`, computed from first and last name as Dataverse does by default.
    pub(crate) fn person_names(self, full_name_length: u32) -> Self {
        self.attr("firstname", "First Name", AttributeKind::string(50))
            .required(RequiredLevel::Recommended)
            .attr("middlename", "Middle Name", AttributeKind::string(50))
            .attr("lastname", "Last Name", AttributeKind::string(50))
            .required(RequiredLevel::ApplicationRequired)
            .attr("fullname", "Full Name", AttributeKind::string(full_name_length))
            .read_only()
    }

    pub(crate) fn build(self) -> Table {
        self.table
    }
}

const ALLOW: (&str, &str) = ("Do Not Allow", "Allow");

fn industry_codes() -> AttributeKind {
    let labels = [
        "Accounting",
        "Agriculture and Non-petrol Natural Resource Extraction",
        "Broadcasting Printing and Publishing",
        "Brokers",
        "Building Supply Retail",
        "Business Services",
        "Consulting",
        "Consumer Services",
        "Design, Direction and Creative Management",
        "Distributors, Dispatchers and Processors",
        "Doctor's Offices and Clinics",
        "Durable Manufacturing",
        "Eating and Drinking Places",
        "Entertainment Retail",
        "Equipment Rental and Leasing",
        "Financial",
        "Food and Tobacco Processing",
        "Inbound Capital Intensive Processing",
        "Inbound Repair and Services",
        "Insurance",
        "Legal Services",
        "Non-Durable Merchandise Retail",
        "Outbound Consumer Service",
        "Petrochemical Extraction and Distribution",
        "Service Retail",
        "SIG Affiliations",
        "Social Services",
        "Special Outbound Trade Contractors",
        "Specialty Realty",
        "Transportation",
        "Utility Creation and Distribution",
        "Vehicle Retail",
        "Wholesale",
    ];
    AttributeKind::Picklist {
        options: labels.iter().enumerate().map(|(i, l)| OptionValue::new(i as i32 + 1, l)).collect(),
        default: None,
    }
}

fn address(b: TableBuilder, n: u8) -> TableBuilder {
    let p = format!("address{n}_");
    b.attr(&format!("{p}line1"), &format!("Address {n}: Street 1"), AttributeKind::string(250))
        .attr(&format!("{p}line2"), &format!("Address {n}: Street 2"), AttributeKind::string(250))
        .attr(&format!("{p}line3"), &format!("Address {n}: Street 3"), AttributeKind::string(250))
        .attr(&format!("{p}city"), &format!("Address {n}: City"), AttributeKind::string(80))
        .attr(&format!("{p}stateorprovince"), &format!("Address {n}: State/Province"), AttributeKind::string(50))
        .attr(&format!("{p}postalcode"), &format!("Address {n}: ZIP/Postal Code"), AttributeKind::string(20))
        .attr(&format!("{p}country"), &format!("Address {n}: Country/Region"), AttributeKind::string(80))
}

fn contact() -> Table {
    let b = TableBuilder::new("contact", "contacts", ("Contact", "Contacts"), "fullname", 2)
        .description("Person with whom a business unit has a relationship, such as customer, supplier, and colleague.")
        .person_names(160)
        .attr("emailaddress1", "Email", AttributeKind::email())
        .attr("emailaddress2", "Email Address 2", AttributeKind::email())
        .attr("emailaddress3", "Email Address 3", AttributeKind::email())
        .attr("telephone1", "Business Phone", AttributeKind::phone(50))
        .attr("telephone2", "Home Phone", AttributeKind::phone(50))
        .attr("telephone3", "Telephone 3", AttributeKind::phone(50))
        .attr("mobilephone", "Mobile Phone", AttributeKind::phone(50))
        .attr("jobtitle", "Job Title", AttributeKind::string(100))
        .attr("description", "Description", AttributeKind::Memo { max_length: 2000 })
        .attr("birthdate", "Birthday", AttributeKind::date_only())
        .attr("numberofchildren", "No. of Children", AttributeKind::Integer { min: 0, max: 1_000_000_000 })
        .attr("annualincome", "Annual Income", AttributeKind::money())
        .attr("donotemail", "Do not allow Emails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotbulkemail", "Do not allow Bulk Emails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotphone", "Do not allow Phone Calls", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotfax", "Do not allow Faxes", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotpostalmail", "Do not allow Mails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotbulkpostalmail", "Do not allow Bulk Mails", AttributeKind::yes_no("Yes", "No", false))
        .attr("donotsendmm", "Send Marketing Materials", AttributeKind::yes_no("Do Not Send", "Send", false))
        .attr("followemail", "Follow Email Activity", AttributeKind::yes_no("Allow", "Do Not Allow", true))
        .attr(
            "preferredcontactmethodcode",
            "Preferred Method of Contact",
            AttributeKind::picklist(&[(1, "Any"), (2, "Email"), (3, "Phone"), (4, "Fax"), (5, "Mail")]),
        )
        .attr("gendercode", "Gender", AttributeKind::picklist(&[(1, "Male"), (2, "Female")]))
        .attr(
            "familystatuscode",
            "Marital Status",
            AttributeKind::picklist(&[(1, "Single"), (2, "Married"), (3, "Divorced"), (4, "Widowed")]),
        )
        .attr("leadsourcecode", "Lead Source", AttributeKind::picklist(&[(1, "Default Value")]))
        .attr(
            "parentcustomerid",
            "Company Name",
            AttributeKind::Lookup {
                lookup_type: LookupType::Customer,
                targets: vec![
                    LookupTarget { table: "account".into(), navigation_property: "parentcustomerid_account".into() },
                    LookupTarget { table: "contact".into(), navigation_property: "parentcustomerid_contact".into() },
                ],
            },
        );
    address(b, 1)
        .standard_columns(&[(0, "Active", 1), (1, "Inactive", 2)], &[(1, "Active", 0), (2, "Inactive", 1)])
        .build()
}

fn account() -> Table {
    let b = TableBuilder::new("account", "accounts", ("Account", "Accounts"), "name", 1)
        .description("Business that represents a customer or potential customer.")
        .attr("name", "Account Name", AttributeKind::string(160))
        .required(RequiredLevel::ApplicationRequired)
        .attr("accountnumber", "Account Number", AttributeKind::string(20))
        .attr("emailaddress1", "Email", AttributeKind::email())
        .attr("telephone1", "Main Phone", AttributeKind::phone(50))
        .attr("fax", "Fax", AttributeKind::phone(50))
        .attr("websiteurl", "Website", AttributeKind::String { max_length: 200, format: "Url".into() })
        .attr("description", "Description", AttributeKind::Memo { max_length: 2000 })
        .attr("numberofemployees", "Number of Employees", AttributeKind::Integer { min: 0, max: 1_000_000_000 })
        .attr("revenue", "Annual Revenue", AttributeKind::money())
        .attr("industrycode", "Industry", industry_codes())
        .attr("accountcategorycode", "Category", AttributeKind::picklist(&[(1, "Preferred Customer"), (2, "Standard")]))
        .attr("accountratingcode", "Account Rating", AttributeKind::picklist(&[(1, "Default Value")]))
        .attr("donotemail", "Do not allow Emails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotbulkemail", "Do not allow Bulk Emails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotphone", "Do not allow Phone Calls", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotpostalmail", "Do not allow Mails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("primarycontactid", "Primary Contact", AttributeKind::lookup("contact", "primarycontactid"))
        .attr("parentaccountid", "Parent Account", AttributeKind::lookup("account", "parentaccountid"));
    address(b, 1)
        .standard_columns(&[(0, "Active", 1), (1, "Inactive", 2)], &[(1, "Active", 0), (2, "Inactive", 1)])
        .build()
}

fn lead() -> Table {
    let b = TableBuilder::new("lead", "leads", ("Lead", "Leads"), "fullname", 4)
        .description("Prospect or potential sales opportunity.")
        .attr("subject", "Topic", AttributeKind::string(300))
        .required(RequiredLevel::ApplicationRequired)
        .person_names(160)
        .attr("emailaddress1", "Email", AttributeKind::email())
        .attr("emailaddress2", "Email Address 2", AttributeKind::email())
        .attr("emailaddress3", "Email Address 3", AttributeKind::email())
        .attr("companyname", "Company Name", AttributeKind::string(100))
        .required(RequiredLevel::Recommended)
        .attr("telephone1", "Business Phone", AttributeKind::phone(50))
        .attr("telephone2", "Home Phone", AttributeKind::phone(50))
        .attr("telephone3", "Other Phone", AttributeKind::phone(50))
        .attr("mobilephone", "Mobile Phone", AttributeKind::phone(20))
        .attr("jobtitle", "Job Title", AttributeKind::string(100))
        .attr("description", "Description", AttributeKind::Memo { max_length: 2000 })
        .attr(
            "leadsourcecode",
            "Lead Source",
            AttributeKind::picklist(&[
                (1, "Advertisement"),
                (2, "Employee Referral"),
                (3, "External Referral"),
                (4, "Partner"),
                (5, "Public Relations"),
                (6, "Seminar"),
                (7, "Trade Show"),
                (8, "Web"),
                (9, "Word of Mouth"),
                (10, "Other"),
            ]),
        )
        .attr("leadqualitycode", "Rating", AttributeKind::picklist(&[(1, "Hot"), (2, "Warm"), (3, "Cold")]))
        .attr("industrycode", "Industry", industry_codes())
        .attr("donotemail", "Do not allow Emails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotbulkemail", "Do not allow Bulk Emails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotphone", "Do not allow Phone Calls", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotfax", "Do not allow Faxes", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotpostalmail", "Do not allow Mails", AttributeKind::yes_no(ALLOW.0, ALLOW.1, false))
        .attr("donotsendmm", "Send Marketing Materials", AttributeKind::yes_no("Do Not Send", "Send", false))
        .attr("parentaccountid", "Account", AttributeKind::lookup("account", "parentaccountid"))
        .attr("parentcontactid", "Contact", AttributeKind::lookup("contact", "parentcontactid"))
        .attr(
            "customerid",
            "Customer",
            AttributeKind::Lookup {
                lookup_type: LookupType::Customer,
                targets: vec![
                    LookupTarget { table: "account".into(), navigation_property: "customerid_account".into() },
                    LookupTarget { table: "contact".into(), navigation_property: "customerid_contact".into() },
                ],
            },
        )
        .attr("estimatedamount", "Est. Value", AttributeKind::money())
        .attr("estimatedclosedate", "Est. Close Date", AttributeKind::date_only());
    address(b, 1)
        .standard_columns(
            &[(0, "Open", 1), (1, "Qualified", 3), (2, "Disqualified", 4)],
            &[
                (1, "New", 0),
                (2, "Contacted", 0),
                (3, "Qualified", 1),
                (4, "Lost", 2),
                (5, "Cannot Contact", 2),
                (6, "No Longer Interested", 2),
                (7, "Canceled", 2),
            ],
        )
        .build()
}

/// A note (`annotation`): text and an optional attached file, regarding one row of another table through
/// the polymorphic lookup `objectid`, whose target table the server records in `objecttypecode`.
/// Notes have no state or status.
fn annotation() -> Table {
    let regarding = ["account", "contact", "lead"]
        .iter()
        .map(|t| LookupTarget { table: (*t).into(), navigation_property: format!("objectid_{t}") })
        .collect();
    TableBuilder::new("annotation", "annotations", ("Note", "Notes"), "subject", 5)
        .description("Note that is attached to one or more objects, including other notes.")
        .attr("subject", "Title", AttributeKind::string(500))
        .attr("notetext", "Description", AttributeKind::Memo { max_length: 100_000 })
        .attr("isdocument", "Is Document", AttributeKind::yes_no("Yes", "No", false))
        .attr("filename", "File Name", AttributeKind::string(255))
        .attr("mimetype", "Mime Type", AttributeKind::string(256))
        .attr("documentbody", "Document", AttributeKind::Memo { max_length: 1_073_741_823 })
        .attr("filesize", "File Size (Bytes)", AttributeKind::Integer { min: 0, max: 1_000_000_000 })
        .read_only()
        .attr("objectid", "Regarding", AttributeKind::Lookup { lookup_type: LookupType::Lookup, targets: regarding })
        .attr("objecttypecode", "Object Type", AttributeKind::EntityName { lookup: "objectid".into() })
        .read_only()
        .standard_columns(&[], &[])
        .build()
}

fn systemuser() -> Table {
    let mut b = TableBuilder::new("systemuser", "systemusers", ("User", "Users"), "fullname", 8)
        .description(
            "Person with access to the Microsoft CRM system and who owns objects in the Microsoft CRM database.",
        )
        .person_names(200)
        .attr("domainname", "User Name", AttributeKind::string(1024))
        .attr("internalemailaddress", "Primary Email", AttributeKind::email())
        .attr("applicationid", "Application ID", AttributeKind::Uniqueidentifier)
        .attr("azureactivedirectoryobjectid", "Azure AD Object ID", AttributeKind::Uniqueidentifier)
        .attr("isdisabled", "Status", AttributeKind::yes_no("Disabled", "Enabled", false));
    b.table.ownership = "BusinessOwned".into();
    b.standard_columns(&[(0, "Active", 1), (1, "Inactive", 2)], &[(1, "Active", 0), (2, "Inactive", 1)]).build()
}

/// The state and status of a system job (`asyncoperation`), shared by the bulk deletion that tracks one.
const JOB_STATES: &[(i32, &str, i32)] =
    &[(0, "Ready", 0), (1, "Suspended", 10), (2, "Locked", 20), (3, "Completed", 30)];
const JOB_STATUSES: &[(i32, &str, i32)] = &[
    (0, "Waiting For Resources", 0),
    (10, "Waiting", 1),
    (20, "In Progress", 2),
    (21, "Pausing", 2),
    (22, "Canceling", 2),
    (30, "Succeeded", 3),
    (31, "Failed", 3),
    (32, "Canceled", 3),
];

/// A system job (`asyncoperation`): what an asynchronous action such as `BulkDelete` started, and how it went.
fn asyncoperation() -> Table {
    TableBuilder::new("asyncoperation", "asyncoperations", ("System Job", "System Jobs"), "name", 4700)
        .description("Process whose execution can proceed independently or in the background.")
        .attr("name", "System Job Name", AttributeKind::string(256))
        .attr(
            "operationtype",
            "System Job Type",
            AttributeKind::picklist(&[(13, "Bulk Delete"), (94, "Bulk Delete Subprocess")]),
        )
        .attr("message", "Message", AttributeKind::Memo { max_length: 1_073_741_823 })
        .attr("friendlymessage", "Friendly message", AttributeKind::Memo { max_length: 1_073_741_823 })
        .attr("startedon", "Started On", AttributeKind::date_time())
        .attr("completedon", "Completed On", AttributeKind::date_time())
        .attr("postponeuntil", "Postpone Until", AttributeKind::date_time())
        .standard_columns(JOB_STATES, JOB_STATUSES)
        .build()
}

/// A bulk deletion (`bulkdeleteoperation`): the records a `BulkDelete` job deleted and failed to delete.
fn bulkdeleteoperation() -> Table {
    TableBuilder::new(
        "bulkdeleteoperation",
        "bulkdeleteoperations",
        ("Bulk Delete Operation", "Bulk Delete Operations"),
        "name",
        4424,
    )
    .description("User-submitted bulk deletion job.")
    .attr("name", "Name", AttributeKind::string(256))
    .attr("asyncoperationid", "System Job", AttributeKind::lookup("asyncoperation", "AsyncOperationId"))
    .attr("successcount", "Success Count", AttributeKind::integer())
    .attr("failurecount", "Failure Count", AttributeKind::integer())
    .attr("isrecurring", "Is Recurring", AttributeKind::yes_no("Yes", "No", false))
    .standard_columns(JOB_STATES, JOB_STATUSES)
    .build()
}

/// A system view (`savedquery`, entity set `savedqueries`): a table's saved FetchXML query and the grid that
/// shows it, as Dataverse keeps one row per view.
///
/// Contract: `returnedtypecode` is the logical name of the table the view returns (an EntityName column the
/// client writes, not one kept in step with a lookup); `fetchxml` is the query `GET {set}?savedQuery={id}` runs
/// through the FetchXML code; `layoutxml` is the grid (`<grid name="resultset" …><row …><cell …/></row></grid>`);
/// `querytype` is 0 for a public view, 1 advanced find, 2 associated, 4 quick find, 64 lookup. The platform
/// writes each table's standard views itself (see `schema::views`), with ids that stay the same everywhere.
/// `iscustomizable` is a plain Yes/No here, where Dataverse has a managed property.
fn savedquery() -> Table {
    let mut b = TableBuilder::new("savedquery", "savedqueries", ("View", "Views"), "name", 1039)
        .description("Saved query against the database.")
        .attr("name", "Name", AttributeKind::string(200))
        .system_required()
        .attr("description", "Description", AttributeKind::Memo { max_length: 2000 })
        .attr("returnedtypecode", "Returned Type", AttributeKind::EntityName { lookup: String::new() })
        .system_required()
        .attr("fetchxml", "Query", AttributeKind::Memo { max_length: 1_073_741_823 })
        .attr("layoutxml", "Grid Layout", AttributeKind::Memo { max_length: 1_073_741_823 })
        .attr("querytype", "Query Type", AttributeKind::integer())
        .system_required()
        .attr("isdefault", "Is Default", AttributeKind::yes_no("Yes", "No", false))
        .attr("isquickfindquery", "Is Quick Find Query", AttributeKind::yes_no("Yes", "No", false))
        .attr("iscustomizable", "Customizable", AttributeKind::yes_no("Yes", "No", true))
        .attr("iscustom", "Is Custom", AttributeKind::yes_no("Yes", "No", false))
        .read_only();
    b.table.ownership = "OrganizationOwned".into();
    b.standard_columns(&[(0, "Active", 1), (1, "Inactive", 2)], &[(1, "Active", 0), (2, "Inactive", 1)]).build()
}

pub fn builtin_tables() -> Vec<Table> {
    vec![
        account(),
        super::activities::activitypointer(),
        annotation(),
        asyncoperation(),
        bulkdeleteoperation(),
        contact(),
        lead(),
        savedquery(),
        systemuser(),
        super::activities::task(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_has_the_documented_columns() {
        let contact = contact();
        let lastname = contact.attribute("lastname").unwrap();
        assert_eq!(lastname.required, RequiredLevel::ApplicationRequired);
        assert_eq!(lastname.kind, AttributeKind::string(50));
        assert!(contact.attribute("fullname").unwrap().is_read_only());
        assert_eq!(contact.navigation("parentcustomerid_account").unwrap().1.table, "account");
        assert_eq!(contact.attribute_by_property("_parentcustomerid_value").unwrap().logical_name, "parentcustomerid");
        assert!(contact.attribute_by_property("parentcustomerid").is_none());
        let status = contact.attribute("statuscode").unwrap().kind.options().unwrap();
        assert_eq!(status[1], OptionValue::related(2, "Inactive", 1));
    }

    #[test]
    fn annotation_regards_accounts_contacts_and_leads() {
        let note = annotation();
        assert_eq!((note.entity_set_name.as_str(), note.primary_name.as_str()), ("annotations", "subject"));
        assert!(!note.change_tracking_enabled);
        assert_eq!(note.attribute("objectid").unwrap().kind.attribute_type(), "Lookup");
        for table in ["account", "contact", "lead"] {
            let (attribute, target) = note.navigation(&format!("objectid_{table}")).unwrap();
            assert_eq!((attribute.logical_name.as_str(), target.table.as_str()), ("objectid", table));
        }
        assert_eq!(note.attribute_by_property("_objectid_value").unwrap().logical_name, "objectid");
        let otc = note.attribute("objecttypecode").unwrap();
        assert_eq!(otc.kind.attribute_type(), "EntityName");
        assert!(otc.is_read_only());
        assert!(note.attribute("ownerid").is_some() && note.attribute("createdon").is_some());
        assert!(note.attribute("statecode").is_none(), "notes have no state");
    }

    #[test]
    fn metadata_ids_are_stable_and_distinct() {
        let a = builtin_tables();
        let b = builtin_tables();
        assert_eq!(a, b);
        let mut ids: Vec<Uuid> = a.iter().flat_map(|t| t.attributes.iter().map(|x| x.metadata_id)).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
