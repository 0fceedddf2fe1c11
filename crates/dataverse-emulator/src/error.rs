//! Web API errors, shaped as Dataverse answers them: `{"error":{"code":"0x…","message":"…"}}` with the HTTP
//! status Dataverse maps each code to.

use axum::http::StatusCode;
use serde_json::json;

/// The error codes the emulator answers with. Names follow Microsoft's error-code reference.
pub mod code {
    pub const OBJECT_DOES_NOT_EXIST: &str = "0x80040217";
    pub const DUPLICATE_RECORD: &str = "0x80040237";
    pub const CONCURRENCY_VERSION_MISMATCH: &str = "0x80060882";
    pub const PROPERTY_NOT_FOUND: &str = "0x80060888";
    pub const RESOURCE_NOT_FOUND: &str = "0x8006088a";
    pub const RECORD_WITH_KEY_NOT_FOUND: &str = "0x80060891";
    pub const DUPLICATE_ENTITY_KEY: &str = "0x80060892";
    pub const PAYLOAD_ERROR: &str = "0x80048d19";
    pub const STRING_LENGTH_TOO_LONG: &str = "0x80044331";
    pub const VALUE_OUT_OF_RANGE: &str = "0x8004431a";
    pub const INVALID_ARGUMENT: &str = "0x80040203";
    pub const ACCESS_TOKEN_EXPIRED: &str = "0x8005f101";
    pub const INVALID_AUTH_TICKET: &str = "0x8004a101";
    pub const METADATA_ALREADY_EXISTS: &str = "0x80047013";
    pub const INVALID_SCHEMA_NAME: &str = "0x80044363";
    pub const CHANGE_TRACKING_NOT_ENABLED: &str = "0x80072491";
    pub const EXPIRED_VERSION_STAMP: &str = "0x80044352";
    /// An activity table's ownership other than user or team (`OwnershipTypeMask: … is not valid …`).
    pub const ACTIVITY_OWNERSHIP_INVALID: &str = "0x8004f120";
    /// ActivityCannotHaveRelatedActivities.
    pub const ACTIVITY_CANNOT_HAVE_RELATED_ACTIVITIES: &str = "0x8004f121";
    /// ActivityMustHaveRelatedNotes.
    pub const ACTIVITY_MUST_HAVE_RELATED_NOTES: &str = "0x8004f123";
    /// A custom activity table with mail merge enabled.
    pub const ACTIVITY_CANNOT_HAVE_MAIL_MERGE: &str = "0x8004f124";
    /// ActivityMetadataUpdate: "The metadata specified for activity is invalid."
    pub const ACTIVITY_METADATA_INVALID: &str = "0x8004f126";
    /// QueryBuilderNoAttribute: a FetchXML or SQL query names a column its table does not have.
    pub const QUERY_BUILDER_NO_ATTRIBUTE: &str = "0x80041103";
}

/// One failed request, ready to be written as Dataverse writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }

    /// `GET /contacts(<id>)` for a row that is not there.
    pub fn record_not_found(table: &str, id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            code::OBJECT_DOES_NOT_EXIST,
            format!("Entity '{table}' With Id = {id} Does Not Exist"),
        )
    }

    pub fn key_not_found(table: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            code::RECORD_WITH_KEY_NOT_FOUND,
            format!("A record with the specified key values does not exist in {table} entity"),
        )
    }

    /// An unknown entity set, function or path segment.
    pub fn segment_not_found(segment: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            code::RESOURCE_NOT_FOUND,
            format!("Resource not found for the segment '{segment}'."),
        )
    }

    /// A method the resource does not answer to (for example `POST WhoAmI`).
    pub fn no_resource(url: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "",
            format!("No HTTP resource was found that matches the request URI '{url}'."),
        )
    }

    /// An unknown property in `$select`, `$filter` or `$orderby`.
    pub fn unknown_query_property(property: &str, type_name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code::PROPERTY_NOT_FOUND,
            format!("Could not find a property named '{property}' on type 'Microsoft.Dynamics.CRM.{type_name}'."),
        )
    }

    /// A FetchXML or SQL query naming a column the table does not have.
    pub fn no_attribute(table: &str, attribute: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code::QUERY_BUILDER_NO_ATTRIBUTE,
            format!(
                "'{table}' entity doesn't contain attribute with Name = '{attribute}' and NameMapping = 'Logical'."
            ),
        )
    }

    /// A query that Dataverse cannot parse or does not support.
    pub fn bad_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::PROPERTY_NOT_FOUND, message)
    }

    /// A body that the OData layer rejects, in the wording Dataverse wraps around the inner OData error.
    pub fn payload(entity_set: &str, inner: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code::PAYLOAD_ERROR,
            format!(
                "Error identified in Payload provided by the user for Entity :'{entity_set}', For more information on \
                 this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  \
                 InnerException : Microsoft.OData.ODataException: {inner}"
            ),
        )
    }

    pub fn unknown_body_property(entity_set: &str, property: &str, table: &str) -> Self {
        Self::payload(
            entity_set,
            format!(
                "The property '{property}' does not exist on type 'Microsoft.Dynamics.CRM.{table}'. Make sure to only \
                 use property names that are defined by the type or mark the type as open type."
            ),
        )
    }

    pub fn cannot_convert(entity_set: &str, literal: &str, edm_type: &str) -> Self {
        Self::payload(entity_set, format!("Cannot convert the literal '{literal}' to the expected type '{edm_type}'."))
    }

    pub fn string_too_long(attribute: &str, table: &str, max: u32) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code::STRING_LENGTH_TOO_LONG,
            format!(
                "A validation error occurred.  The length of the '{attribute}' attribute of the '{table}' entity \
                 exceeded the maximum allowed length of '{max}'."
            ),
        )
    }

    pub fn out_of_range(value: impl std::fmt::Display, attribute: &str, table: &str, accepted: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code::VALUE_OUT_OF_RANGE,
            format!(
                "A validation error occurred. The value {value} of '{attribute}' on record of type '{table}' is \
                 outside the valid range. Accepted Values: {accepted}"
            ),
        )
    }

    pub fn duplicate_record() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            code::DUPLICATE_RECORD,
            "A record with matching key values already exists.",
        )
    }

    pub fn version_mismatch() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            code::CONCURRENCY_VERSION_MISMATCH,
            "The version of the existing record doesn't match the RowVersion property provided.",
        )
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "0x80060888", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "0x80040216", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<crate::store::JournalError> for ApiError {
    fn from(e: crate::store::JournalError) -> Self {
        ApiError::internal(e.to_string())
    }
}
