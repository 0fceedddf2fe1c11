//! The dashboard's static files, embedded in the binary: htmx and Pico CSS as their projects published them
//! (pinned: the version is in the name, so a page never gets a file it was not written for, and a browser may
//! keep each for a year), and dynsync's own stylesheet. Their licences are in `assets/LICENSES.txt`.
//!
//! Each is sent gzip-compressed to a browser that takes it (all do), compressed once, on first use.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::sync::OnceLock;

/// An embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    gzipped: OnceLock<Vec<u8>>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
        Asset { name, content_type, body, gzipped: OnceLock::new() }
    }

    fn gzipped(&self) -> &[u8] {
        self.gzipped.get_or_init(|| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(self.body).expect("compressing into memory does not fail");
            encoder.finish().expect("compressing into memory does not fail")
        })
    }
}

static ASSETS: [Asset; 3] = [
    Asset::new(
        "htmx-2.0.11.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/htmx-2.0.11.min.js"),
    ),
    Asset::new("pico-2.1.1.min.css", "text/css; charset=utf-8", include_bytes!("../../../assets/pico-2.1.1.min.css")),
    Asset::new("dynsync.css", "text/css; charset=utf-8", include_bytes!("../../../assets/dynsync.css")),
];

/// Whether the request takes gzip.
fn takes_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        },
    )
}

pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file: the dashboard's files are named by their version")
            .into_response();
    };
    // dynsync's own stylesheet changes with dynsync: it is checked again each time; the pinned files never change.
    let cache = match asset.name {
        "dynsync.css" => "no-cache",
        _ => "public, max-age=31536000, immutable",
    };
    let mut response = match takes_gzip(&headers) {
        true => {
            let mut r = asset.gzipped().to_vec().into_response();
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        false => asset.body.into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_to_whoever_takes_it_and_not_to_whoever_refuses_it() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            takes_gzip(&h)
        };
        assert!(with("gzip, deflate, br, zstd"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("br"));
        assert!(!with("gzip;q=0"));
        assert!(!takes_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_file_compresses_to_what_it_was() {
        for asset in &ASSETS {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(asset.gzipped()), &mut plain).unwrap();
            assert_eq!(plain, asset.body, "{}", asset.name);
        }
    }
}
