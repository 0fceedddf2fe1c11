//! The dashboard, as a browser and a person use it. A real Chromium, driven by Playwright
//! (`tests/browser/dashboard.mjs`), goes the new user's way: a wrong token, then the right one; the catalog; a
//! connection with a wrong secret, then the right one; a destination, and a flow whose mapping error is fixed on the
//! page; the flow's run with its counts; a failed record's drill-down, replayed once its cause is fixed in Dynamics — checking each page for console errors and serious accessibility
//! violations (axe-core) and keeping a screenshot of it (`target/dashboard-screenshots`).
//!
//! Without Node.js and Chromium the browser test says so and passes, unless `DYNSYNC_BROWSER_TESTS=required`
//! (CI sets it). The other tests here speak HTTP as a browser does, on both stores.

mod common;

use common::{Backend, World, bounded_for, found, profile};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

fn chromium() -> Option<PathBuf> {
    let named = std::env::var_os("CHROMIUM").map(PathBuf::from);
    named.into_iter().chain([PathBuf::from("/usr/bin/chromium")]).find(|p| p.exists())
}

/// Whether the browser test can run here; panics when CI requires it and it cannot.
fn browser_ready() -> bool {
    let required = std::env::var("DYNSYNC_BROWSER_TESTS").is_ok_and(|v| v == "required");
    let missing = match (found("node"), chromium()) {
        (false, _) => Some("Node.js (node)"),
        (_, None) => Some("Chromium (/usr/bin/chromium, Debian's package chromium, or CHROMIUM=<path>)"),
        _ => None,
    };
    if let Some(missing) = missing {
        assert!(!required, "DYNSYNC_BROWSER_TESTS=required, and {missing} is not here");
        eprintln!("the dashboard's browser test needs {missing}: skipped");
        return false;
    }
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    true
}

/// Runs a step of the browser's walk (dynsync answers it meanwhile, on this test's runtime); panics with what it
/// printed when it fails.
async fn walk(step: &str, world: &World, env: &[(&str, String)]) {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    let output = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .arg(step)
        .current_dir(browser_dir())
        .env("DYNSYNC_URL", &world.service.url)
        .env("DYNSYNC_TOKEN", &world.service.token)
        .env("DYNSYNC_SANDBOX", &world.sandbox)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", chromium().expect("checked before"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "the browser's step '{step}' failed (screenshots in {}):\n{}{}",
        shots.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_new_user_connects_dynamics_watches_a_run_and_replays_its_failed_record_in_chromium() {
    if !browser_ready() {
        return;
    }
    bounded_for(Duration::from_secs(240), async {
        let world = World::start(Backend::Sqlite).await.unwrap();
        let secret = world.emulator.client_secret.expose().to_string();
        let destination = world.destination_params(&secret);
        walk("connect", &world, &[("DESTINATION", destination.to_string()), ("WRONG_SECRET", "not-the-secret".into())])
            .await;
        let connections = world.get("connections").await.json();
        assert_eq!(
            connections["items"][0]["name"], "Contoso sales",
            "the connection made in the browser: {connections}"
        );

        // In Dynamics, the audience's column; in the browser, the destination and the flow.
        world.add_text_column("new_Gold", 20).await;
        walk("flow", &world, &[]).await;
        let flows = world.get("flows").await.json();
        let flow = flows["items"][0]["id"].as_str().expect("the flow made in the browser").to_string();
        // Four profiles streamed in, one of a contact Dynamics does not have.
        let absent = Uuid::new_v4();
        let mut messages = Vec::new();
        for name in ["Ann", "Bob", "Cy"] {
            let id = world.create_contact(name).await;
            messages.push(profile(&id.to_string(), Some(name), &[("seg-gold", "realized")]));
        }
        messages.push(profile(&absent.to_string(), Some("Absent"), &[("seg-gold", "realized")]));
        world.stream(&flow, messages).await;
        world.settled(&flow, 4).await;
        let env = [("FLOW_ID", flow.clone()), ("FAILED_KEY", absent.to_string())];
        walk("runs", &world, &env).await;

        // The contact is made in Dynamics; the replay, from the page, writes it.
        let body = json!({"lastname": "Absent"});
        let made = world.dynamics().send(Method::PATCH, &format!("contacts({absent})"), Some(&body)).await.unwrap();
        assert!(made.status().is_success());
        walk("replay", &world, &env).await;
        let totals = world.settled(&flow, 4).await;
        assert_eq!((totals.written, totals.failed), (4, 0), "{totals:?}");
        world.finish().await;
    })
    .await;
}

/// A browser's session: the cookie a sign-in set, sent back as a browser would.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browser {
    async fn sign_in(world: &World, token: &str) -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = world.service.url.clone();
        let response = http
            .post(format!("{base}/sign-in"))
            .form(&[("token", token), ("sandbox", world.sandbox.as_str()), ("next", "/flows")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap());
        let set = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attribute), "the session cookie is {attribute}: {set}");
        }
        assert!(!set.contains(token), "the cookie holds the token sealed, not as is: {set}");
        let cookie = set.split(';').next().unwrap().to_string();
        Browser { http, base, cookie }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self.http.get(format!("{}{path}", self.base)).header(COOKIE, &self.cookie).send().await.unwrap();
        let status = response.status();
        let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string());
        (status, location.unwrap_or(response.text().await.unwrap()))
    }

    async fn post(&self, path: &str, origin: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .header("Origin", origin)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string());
        (status, location.unwrap_or(response.text().await.unwrap()))
    }
}

async fn a_page_offers_only_what_its_token_may_do_and_a_revoked_token_signs_out(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let reply = world.post("tokens", json!({"name": "watcher", "roles": ["view"], "sandboxes": [world.sandbox]})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let (viewer_token, viewer_id) =
        (reply.json()["token"].as_str().unwrap().to_string(), reply.json()["id"].as_str().unwrap().to_string());

    let operator = Browser::sign_in(&world, &world.service.token).await;
    let (status, html) = operator.get(&format!("/flows/{flow}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Loyalty audiences") && html.contains(">Disable<") && html.contains("Delete the flow"));

    let viewer = Browser::sign_in(&world, &viewer_token).await;
    let (_, html) = viewer.get(&format!("/flows/{flow}")).await;
    assert!(html.contains("Loyalty audiences"), "{html}");
    assert!(!html.contains(">Disable<") && !html.contains("Delete the flow"), "a view token is offered no action");
    // Asked anyway, the API refuses it in its own words, and the flow stays on.
    let own = world.service.url.clone();
    let (status, html) = viewer.post(&format!("/flows/{flow}/disable"), &own, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("takes the activate role"), "{html}");
    assert_eq!(world.get(&format!("flows/{flow}")).await.json()["items"][0]["state"], "enabled");

    // A form from another site is refused, whoever's cookie it carries.
    let (status, text) = operator.post(&format!("/flows/{flow}/disable"), "http://evil.example", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    // Deleting takes the box ticked.
    let (_, html) = operator.post(&format!("/flows/{flow}/delete"), &own, &[]).await;
    assert!(html.contains("tick the box"), "{html}");
    let (status, location) = operator.post(&format!("/flows/{flow}/disable"), &own, &[]).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, format!("/flows/{flow}?done=disabled").as_str()));
    assert_eq!(world.get(&format!("flows/{flow}")).await.json()["items"][0]["state"], "disabled");
    let (_, html) = operator.get(&format!("/flows/{flow}")).await;
    assert!(html.contains("<td>disabled</td><td>operator</td>"), "the flow's timeline says who disabled it: {html}");

    // Revoked, the token's session ends at its next page.
    let reply = world.send(Method::DELETE, &format!("tokens/{viewer_id}"), None).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let (status, location) = viewer.get("/flows").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/sign-in?ended=refused");
    world.finish().await;
}

#[tokio::test]
async fn a_page_offers_only_what_its_token_may_do_and_a_revoked_token_signs_out_on_sqlite() {
    a_page_offers_only_what_its_token_may_do_and_a_revoked_token_signs_out(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_page_offers_only_what_its_token_may_do_and_a_revoked_token_signs_out_on_postgres() {
    a_page_offers_only_what_its_token_may_do_and_a_revoked_token_signs_out(Backend::Postgres).await;
}

async fn the_connect_form_signs_in_as_more_app_registrations_and_names_the_one_that_fails(backend: Backend) {
    let Some(world) = World::start_with_registrations(backend).await else { return };
    let apps = &world.emulator.applications;
    let browser = Browser::sign_in(&world, &world.service.token).await;
    let (spec, auth) = (dynsync::specs::DYNAMICS_DESTINATION.to_string(), dynsync::specs::CLIENT_CREDENTIALS_AUTH);
    let form_path = format!("/connections/new?spec={spec}&auth={}", auth.replace(' ', "+"));
    let (status, html) = browser.get(&form_path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("App registration 3: client secret"), "three rows of more registrations: {html}");

    let main = world.emulator.client_secret.expose().to_string();
    let params = world.destination_params(&main);
    let mut form: Vec<(String, String)> =
        vec![("spec".into(), spec.clone()), ("auth".into(), auth.into()), ("name".into(), "Three users".into())];
    for (key, value) in params.as_object().unwrap() {
        form.push((format!("param.{key}"), value.as_str().unwrap().to_string()));
    }
    let (first, second) = (apps[0].client_id.to_string(), apps[1].client_id.to_string());
    // The second row's secret is wrong, and the third row left empty.
    let with_rows = |second_secret: &str| {
        let mut form = form.clone();
        form.extend([
            ("registration.0.clientId".into(), first.clone()),
            ("registration.0.clientSecret".into(), apps[0].client_secret.expose().to_string()),
            ("registration.1.clientId".into(), second.clone()),
            ("registration.1.clientSecret".into(), second_secret.to_string()),
            ("registration.2.clientId".into(), String::new()),
            ("registration.2.clientSecret".into(), String::new()),
        ]);
        form
    };
    let own = world.service.url.clone();
    let post = |form: Vec<(String, String)>| {
        let browser = &browser;
        let own = own.clone();
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            browser.post("/connections/new", &own, &pairs).await
        }
    };
    let (status, html) = post(with_rows("abcde~a-wrong-secret-xyz")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(&format!("app registration {second}")) && html.contains("client secret is wrong"), "{html}");
    assert!(html.contains(&format!("value=\"{second}\"")), "the client ids typed are kept: {html}");
    assert!(!html.contains("abcde~"), "no secret is shown again: {html}");
    assert!(world.get("connections").await.json()["items"].as_array().unwrap().is_empty());

    let (status, location) = post(with_rows(apps[1].client_secret.expose())).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/connections?done=connected"));
    let connections = world.get("connections").await.json();
    let listed = &connections["items"][0]["auth"]["params"]["additionalRegistrations"];
    assert_eq!(listed, &json!([{"clientId": first}, {"clientId": second}]), "{connections}");
    world.finish().await;
}

#[tokio::test]
async fn the_connect_form_signs_in_as_more_app_registrations_and_names_the_one_that_fails_on_sqlite() {
    the_connect_form_signs_in_as_more_app_registrations_and_names_the_one_that_fails(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_connect_form_signs_in_as_more_app_registrations_and_names_the_one_that_fails_on_postgres() {
    the_connect_form_signs_in_as_more_app_registrations_and_names_the_one_that_fails(Backend::Postgres).await;
}

#[tokio::test]
async fn without_a_session_every_page_leads_to_the_sign_in_and_back() {
    let Some(world) = World::start(Backend::Sqlite).await else { return };
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/flows", "/catalog", "/connections", &format!("/flows/{}", Uuid::new_v4())] {
        let response = http.get(format!("{}{path}", world.service.url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        let to = response.headers()[LOCATION].to_str().unwrap();
        let back: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
        assert_eq!(to, format!("/sign-in?next={back}"), "{path}");
    }
    // Another site cannot sign this browser in, even with a good token.
    let response = http
        .post(format!("{}/sign-in", world.service.url))
        .header("Origin", "http://evil.example")
        .form(&[("token", world.service.token.as_str()), ("sandbox", "prod")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(SET_COOKIE).is_none());
    // A forged cookie is no session.
    let response = http
        .get(format!("{}/flows", world.service.url))
        .header(COOKIE, "dynsync_session=v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // The files the pages use come compressed, and are small.
    let mut transferred = 0;
    for asset in ["htmx-2.0.11.min.js", "pico-2.1.1.min.css", "dynsync.css"] {
        let response = http
            .get(format!("{}/assets/{asset}", world.service.url))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert_eq!(response.headers()["content-encoding"], "gzip", "{asset}");
        transferred += response.bytes().await.unwrap().len();
    }
    assert!(transferred < 100 * 1024, "the pages' JavaScript and CSS come to {transferred} bytes compressed");
    world.finish().await;
}

async fn every_change_is_on_the_timeline_with_who_made_it(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (connection, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let reply =
        world.post("tokens", json!({"name": "night shift", "roles": ["activate"], "sandboxes": [world.sandbox]})).await;
    let (token, token_id) =
        (reply.json()["token"].as_str().unwrap().to_string(), reply.json()["id"].as_str().unwrap().to_string());
    let reply =
        world.send_as(&token, &world.sandbox, Method::POST, &format!("flows/{flow}/action?op=disable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = world.send(Method::DELETE, &format!("flows/{flow}"), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);

    let timeline: dynsync::api::Timeline = serde_json::from_str(&world.get("timeline").await.text).unwrap();
    let seen: Vec<(String, String, String)> = timeline
        .items
        .iter()
        .map(|c| (c.resource_id.to_string(), c.action.as_str().to_string(), c.actor.clone()))
        .collect();
    let by_token = format!("token 'night shift' ({token_id})");
    let expected = vec![
        (flow.clone(), "deleted".to_string(), "operator".to_string()),
        (flow.clone(), "disabled".to_string(), by_token),
        (flow.clone(), "created".to_string(), "operator".to_string()),
        (target.clone(), "created".to_string(), "operator".to_string()),
        (connection.clone(), "created".to_string(), "operator".to_string()),
    ];
    assert_eq!(seen, expected, "newest first, each with who made it");
    assert!(timeline.items.iter().all(|c| !c.actor.contains(&token)), "the token itself is never shown");
    assert_eq!(timeline.items[0].resource_name, "Loyalty audiences", "a deleted flow keeps its name here");

    // One resource's changes; another sandbox sees none of them.
    let one: dynsync::api::Timeline =
        serde_json::from_str(&world.get(&format!("timeline?property=resourceId=={connection}")).await.text).unwrap();
    assert_eq!(one.items.len(), 1);
    let elsewhere = world.send_in("elsewhere", Method::GET, "timeline", None).await;
    assert_eq!(serde_json::from_str::<dynsync::api::Timeline>(&elsewhere.text).unwrap().items, vec![]);
    let bad = world.get("timeline?property=flowId==x").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.detail().contains("property=resourceId=="), "{}", bad.text);
    world.finish().await;
}

#[tokio::test]
async fn every_change_is_on_the_timeline_with_who_made_it_on_sqlite() {
    every_change_is_on_the_timeline_with_who_made_it(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_change_is_on_the_timeline_with_who_made_it_on_postgres() {
    every_change_is_on_the_timeline_with_who_made_it(Backend::Postgres).await;
}

async fn a_table_is_previewed_and_a_dataset_browsed_as_the_flow_wrote_it(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    for name in ["Ann", "Bob"] {
        world.create_contact(name).await;
    }
    let connection = common::source_connection(&world).await;
    let source = common::source_of(&world, &connection, "contact").await;
    let target = common::dataset_target(&world, json!({"dataSetId": "contacts"})).await;
    let body = json!({
        "name": "Contacts into the lake",
        "flowSpec": {"id": "14518937-270c-4525-bdec-c2ba7cce3860", "version": "1.0"},
        "sourceConnectionIds": [source], "targetConnectionIds": [target],
        "scheduleParams": {"frequency": "hour", "interval": 1}
    });
    let reply = world.post("flows", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let flow = reply.json()["id"].as_str().unwrap().to_string();
    common::rows_when(&world, &target, "the full load", |rows| rows.len() >= 2).await;

    let browser = Browser::sign_in(&world, &world.service.token).await;
    let (status, html) = browser.get(&format!("/connections/{connection}/tables")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(&format!("/connections/{connection}/tables/contact")), "the contact table is listed");
    let (status, html) = browser.get(&format!("/connections/{connection}/tables/contact")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<td>Ann</td>") && html.contains("<td>Bob</td>"), "the preview shows the rows: {html}");
    assert!(html.contains("<code>lastname</code>"), "and the columns");

    let (_, html) = browser.get("/connections").await;
    assert!(html.contains(&format!("/datasets/{target}")), "the dataset is listed with the connections");
    let (status, html) = browser.get(&format!("/datasets/{target}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<td>Ann</td>") && html.contains("<td>r</td>"), "the dataset's rows, as read: {html}");

    // The hourly ingestion has loaded once: on time, its run counted.
    let (_, html) = browser.get(&format!("/flows/{flow}")).await;
    assert!(html.contains("Table ingestion") && html.contains(">On time<"), "{html}");
    assert!(html.contains("Replay the table"), "an ingestion offers its replay: {html}");
    assert!(html.contains("&#34;schedule&#34;"), "and shows its definition as the API answers it: {html}");
    let (status, html) = browser.get(&format!("/connections/{}/tables", Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{html}");

    // Its schedule changed: through the API as Flow Service does (JSON Patch, If-Match), then on its page.
    let etag = world.get(&format!("flows/{flow}")).await.json()["items"][0]["etag"].as_str().unwrap().to_string();
    let every_two_hours = json!([{"op": "replace", "path": "/scheduleParams/interval", "value": 2}]);
    let patch = |etag: &str, body: Json| {
        world
            .http
            .patch(format!("{}/flows/{flow}", world.service.api()))
            .header("Authorization", format!("Bearer {}", world.service.token))
            .header("x-sandbox-name", &world.sandbox)
            .header("If-Match", etag.to_string())
            .json(&body)
            .send()
    };
    assert_eq!(patch("stale", every_two_hours.clone()).await.unwrap().status(), StatusCode::PRECONDITION_FAILED);
    let wrong = json!([{"op": "replace", "path": "/name", "value": "x"}]);
    assert_eq!(patch(&etag, wrong).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(patch(&etag, every_two_hours).await.unwrap().status(), StatusCode::OK);
    let params = world.get(&format!("flows/{flow}")).await.json()["items"][0]["scheduleParams"].clone();
    assert_eq!((params["frequency"].as_str(), params["interval"].as_str()), (Some("hour"), Some("2")), "{params}");
    let (status, location) = browser
        .post(&format!("/flows/{flow}/schedule"), &world.service.url, &[("frequency", "day"), ("interval", "1")])
        .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, format!("/flows/{flow}?done=rescheduled").as_str())
    );
    let params = world.get(&format!("flows/{flow}")).await.json()["items"][0]["scheduleParams"].clone();
    assert_eq!(params["frequency"], "day", "{params}");

    // The table loaded from its page: a schedule Flow Service refuses makes nothing; a good one makes the flow.
    let own = world.service.url.clone();
    let load = format!("/connections/{connection}/tables/contact/load");
    let sources = || async { world.get("sourceConnections").await.json()["items"].as_array().unwrap().len() };
    let before = sources().await;
    let form = [
        ("name", "Contacts every 5 minutes"),
        ("dataset", "contacts_often"),
        ("frequency", "minute"),
        ("interval", "5"),
    ];
    let (status, html) = browser.post(&load, &own, &form).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"load-problem\"") && html.contains("15"), "the schedule's minimum is said: {html}");
    assert_eq!(sources().await, before, "nothing was made");
    let form = [("name", "Contacts daily"), ("dataset", "contacts_daily"), ("frequency", "day"), ("interval", "1")];
    let (status, location) = browser.post(&load, &own, &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    assert!(location.ends_with("?done=loading"), "{location}");
    let made = location.trim_start_matches("/flows/").trim_end_matches("?done=loading").to_string();
    let flow = world.get(&format!("flows/{made}")).await.json();
    assert_eq!(flow["items"][0]["name"], "Contacts daily", "{flow}");
    assert_eq!(sources().await, before + 1);
    world.finish().await;
}

#[tokio::test]
async fn a_table_is_previewed_and_a_dataset_browsed_as_the_flow_wrote_it_on_sqlite() {
    a_table_is_previewed_and_a_dataset_browsed_as_the_flow_wrote_it(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_table_is_previewed_and_a_dataset_browsed_as_the_flow_wrote_it_on_postgres() {
    a_table_is_previewed_and_a_dataset_browsed_as_the_flow_wrote_it(Backend::Postgres).await;
}

async fn a_flow_s_lag_is_sampled_and_drawn_hour_by_hour(backend: Backend) {
    let emulator =
        dataverse_emulator::EmulatorConfig { cost: dataverse_emulator::CostModel::free(), ..Default::default() };
    let fast = |c: &mut dynsync::ServiceConfig| c.alert_interval = Duration::from_millis(100);
    let Some(world) = World::start_configured(backend, emulator, fast).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let browser = Browser::sign_in(&world, &world.service.token).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, html) = browser.get(&format!("/flows/{flow}")).await;
        if html.contains(r#"class="l""#) {
            assert!(html.contains("largest lag 0 s, 0 waiting at most"), "an idle flow is not behind: {html}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no lag sample is drawn: {html}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world.finish().await;
}

#[tokio::test]
async fn a_flow_s_lag_is_sampled_and_drawn_hour_by_hour_on_sqlite() {
    a_flow_s_lag_is_sampled_and_drawn_hour_by_hour(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_flow_s_lag_is_sampled_and_drawn_hour_by_hour_on_postgres() {
    a_flow_s_lag_is_sampled_and_drawn_hour_by_hour(Backend::Postgres).await;
}

#[tokio::test]
async fn a_flow_s_page_lists_its_alert_rules_and_what_they_opened() {
    let emulator =
        dataverse_emulator::EmulatorConfig { cost: dataverse_emulator::CostModel::free(), ..Default::default() };
    let fast = |c: &mut dynsync::ServiceConfig| c.alert_interval = Duration::from_millis(100);
    let Some(world) = World::start_configured(Backend::Sqlite, emulator, fast).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let rules = json!({"rules": [{"kind": "failure", "channels": {"emails": ["ops@example.com"]}}]});
    let reply = world.send(Method::PUT, &format!("flows/{flow}/alerts"), Some(rules)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    world.stream(&flow, vec![profile(&Uuid::new_v4().to_string(), Some("Absent"), &[("seg-gold", "realized")])]).await;
    world.settled(&flow, 1).await;

    let browser = Browser::sign_in(&world, &world.service.token).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, html) = browser.get(&format!("/flows/{flow}")).await;
        assert!(html.contains("When a record fails: ops@example.com"), "the rule, in words: {html}");
        if html.contains(r#"<span class="badge bad">opened</span>"#) {
            assert!(html.contains("ops@example.com: "), "and where its notice went: {html}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the alert is not shown opened: {html}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world.finish().await;
}

#[tokio::test]
async fn alert_rules_are_set_on_the_flow_s_page_every_problem_said_at_once() {
    let Some(world) = World::start(Backend::Sqlite).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let browser = Browser::sign_in(&world, &world.service.token).await;
    let own = world.service.url.clone();
    let bad = [
        ("failureRate", "150"),
        ("lagMinutes", "10"),
        ("webhookUrl", "http://hooks.example.com/x"),
        ("emails", "not-an-address"),
    ];
    let (status, html) = browser.post(&format!("/flows/{flow}/alerts"), &own, &bad).await;
    assert_eq!(status, StatusCode::OK);
    for said in ["150", "hooks.example.com", "not-an-address", "signingSecret"] {
        assert!(html.contains(said), "the page names {said}: {html}");
    }
    let kept: dynsync::alerts::AlertSettingsView =
        serde_json::from_str(&world.get(&format!("flows/{flow}/alerts")).await.text).unwrap();
    assert!(kept.rules.is_empty(), "nothing is kept from a refused form");

    let good = [
        ("failure", "on"),
        ("failureRate", "5"),
        ("lagMinutes", "10"),
        ("emails", "ops@example.com, oncall@example.com"),
    ];
    let (status, location) = browser.post(&format!("/flows/{flow}/alerts"), &own, &good).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, format!("/flows/{flow}?done=alerts-saved#alerts").as_str())
    );
    let kept: dynsync::alerts::AlertSettingsView =
        serde_json::from_str(&world.get(&format!("flows/{flow}/alerts")).await.text).unwrap();
    let kinds: Vec<&str> = kept.rules.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["failure", "failureRate", "lag"]);
    assert_eq!(kept.rules[2].threshold_seconds, Some(600));
    assert_eq!(kept.rules[0].channels.emails, ["ops@example.com", "oncall@example.com"]);
    let (_, html) = browser.get(&format!("/flows/{flow}")).await;
    assert!(html.contains("When the flow is over 10 min behind: ops@example.com, oncall@example.com"), "{html}");
    assert!(
        html.contains(r#"name="lagMinutes" inputmode="decimal" value="10""#),
        "the form shows the rules kept: {html}"
    );
    world.finish().await;
}

#[tokio::test]
async fn an_activation_flow_s_mappings_are_changed_on_its_page_and_a_stale_page_is_refused() {
    let Some(world) = World::start(Backend::Sqlite).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let browser = Browser::sign_in(&world, &world.service.token).await;
    let (status, html) = browser.get(&format!("/flows/{flow}/edit")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(r#"value="seg-silver""#) && html.contains(r#"value="firstname""#),
        "the form holds the flow: {html}"
    );
    let etag = world.get(&format!("flows/{flow}")).await.json()["items"][0]["etag"].as_str().unwrap().to_string();
    let own = world.service.url.clone();
    let form = |last: &'static str, etag: String| {
        vec![
            ("target", target.clone()),
            ("etag", etag),
            ("name", "Loyalty audiences".to_string()),
            ("audience.0.id", "seg-gold".to_string()),
            ("audience.0.mapping", "gold".to_string()),
            ("mapping.0.source", "contactId".to_string()),
            ("mapping.0.target", "contactid".to_string()),
            ("mapping.1.source", "person.name.lastName".to_string()),
            ("mapping.1.target", last.to_string()),
        ]
    };
    let path = format!("/flows/{flow}/edit");
    let post = |fields: Vec<(&'static str, String)>| {
        let (browser, own, path) = (&browser, own.clone(), path.clone());
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            browser.post(&path, &own, &fields).await
        }
    };
    let (status, html) = post(form("lastnme", etag.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Closest columns: lastname"), "the mistake, beside its row: {html}");
    let (status, location) = post(form("lastname", etag.clone())).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, format!("/flows/{flow}?done=changed").as_str()));
    let saved = world.get(&format!("flows/{flow}")).await.json();
    assert_eq!(saved["items"][0]["mappings"][1]["target"], "lastname", "{saved}");
    assert_eq!(saved["items"][0]["audiences"].as_array().unwrap().len(), 1, "{saved}");
    // The page read before that save is stale now.
    let (_, html) = post(form("lastname", etag)).await;
    assert!(html.contains("the flow was changed since this page was read"), "{html}");
    world.finish().await;
}

#[tokio::test]
async fn a_lead_intake_s_settings_are_saved_on_its_page_validate_sends_a_test_lead_and_its_leads_are_listed() {
    let Some(world) = World::start(Backend::Sqlite).await else { return };
    let (_, target) = world.destination("new").await;
    let body = json!({
        "name": "Marketplace leads",
        "flowSpec": {"id": dynsync::specs::LEAD_INTAKE_FLOW_SPEC, "version": "1.0"},
        "targetConnectionIds": [target],
    });
    let reply = world.post("flows", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let intake = reply.json()["id"].as_str().unwrap().to_string();
    let intake_url = reply.json()["intakeUrl"].as_str().unwrap().to_string();
    let browser = Browser::sign_in(&world, &world.service.token).await;
    let (status, html) = browser.get(&format!("/flows/{intake}/settings")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let etag = world.get(&format!("flows/{intake}")).await.json()["items"][0]["etag"].as_str().unwrap().to_string();
    let own = world.service.url.clone();
    let path = format!("/flows/{intake}/settings");
    let form = |source: &'static str| {
        vec![
            ("etag", etag.clone()),
            ("name", "Marketplace leads".to_string()),
            ("notify", String::new()),
            ("dedupWindowDays", "14".to_string()),
            ("columns.source", source.to_string()),
        ]
    };
    let as_refs = |f: &[(&'static str, String)]| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let fields = as_refs(&form("new_nosuch"));
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, html) = browser.post(&path, &own, &fields).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("new_nosuch"), "the column the lead table lacks is named: {html}");
    let fields = as_refs(&form("subject"));
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, location) = browser.post(&path, &own, &fields).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, format!("{path}?saved").as_str()), "{location}");
    let saved = world.get(&format!("flows/{intake}")).await.json();
    assert_eq!(saved["items"][0]["dedupWindowDays"], 14, "{saved}");

    let (status, html) = browser.post(&format!("{path}/validate"), &own, &[]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(r#"Validate <span class="badge ok">passed</span>"#), "{html}");
    assert!(html.contains("<td>written</td>") && html.contains("in Dynamics"), "{html}");

    // Its leads: Validate's test lead, handled; and a body that is no lead, refused with why.
    let refused =
        world.http.post(format!("{}{intake_url}", world.service.url)).body("{\"UserDetails\": 42}").send().await;
    assert_eq!(refused.unwrap().status(), StatusCode::BAD_REQUEST);
    let (status, html) = browser.get(&format!("/flows/{intake}/leads")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(r#"<span class="badge idle">test</span>"#) && html.contains(">handled<"), "{html}");
    assert!(html.contains("UserDetails"), "the refused body, with why: {html}");
    world.finish().await;
}

#[tokio::test]
async fn an_email_events_flow_s_settings_are_saved_on_its_page_and_its_mailgun_key_never_shown() {
    let Some(world) = World::start(Backend::Sqlite).await else { return };
    let tables = dynsync::engagement::install::EngagementTables::new("new".parse().unwrap());
    dynsync::engagement::install::install(&world.dynamics(), &tables).await.unwrap();
    let (_, target) = world.destination("new").await;
    let body = json!({
        "name": "Newsletter events",
        "flowSpec": {"id": dynsync::specs::ENGAGEMENT_EVENTS_FLOW_SPEC, "version": "1.0"},
        "targetConnectionIds": [target],
        "provider": "mailgun",
        "signingKey": "key-0123456789abcdef0123",
    });
    let reply = world.post("flows", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let flow = reply.json()["id"].as_str().unwrap().to_string();
    let browser = Browser::sign_in(&world, &world.service.token).await;
    let path = format!("/flows/{flow}/events");
    let (status, html) = browser.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(r#"value="donotbulkemail""#) && !html.contains("key-0123456789abcdef0123"), "{html}");
    let etag = world.get(&format!("flows/{flow}")).await.json()["items"][0]["etag"].as_str().unwrap().to_string();
    let own = world.service.url.clone();
    let (_, html) = browser
        .post(&path, &own, &[("etag", etag.as_str()), ("name", "Newsletter events"), ("optOutColumns", "donotmail")])
        .await;
    assert!(html.contains("optOutColumns[0]") && html.contains("donotemail"), "the closest column is offered: {html}");
    let form = [
        ("etag", etag.as_str()),
        ("name", "Newsletter events"),
        ("optOutColumns", "donotbulkemail, donotemail"),
        ("onClick", "on"),
    ];
    let (status, location) = browser.post(&path, &own, &form).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, format!("{path}?saved").as_str()));
    let saved = world.get(&format!("flows/{flow}")).await.json();
    assert_eq!(saved["items"][0]["optOutColumns"], json!(["donotbulkemail", "donotemail"]), "{saved}");
    assert_eq!(saved["items"][0]["followUp"]["onClick"], true, "{saved}");
    world.finish().await;
}

/// A self-signed RSA certificate, standing for Amazon SNS's signing certificate.
fn sns_certificate() -> String {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    let key = aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<Pkcs8V1Der>::as_der(&key).unwrap().as_ref().to_vec();
    let signer = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    let params = rcgen::CertificateParams::new(vec!["sns.eu-west-1.amazonaws.com".to_string()]).unwrap();
    params.self_signed(&signer).unwrap().pem()
}

#[tokio::test]
async fn an_ses_flow_s_pinned_sns_certificates_are_shown_and_changed_on_its_page() {
    let Some(world) = World::start(Backend::Sqlite).await else { return };
    let tables = dynsync::engagement::install::EngagementTables::new("new".parse().unwrap());
    dynsync::engagement::install::install(&world.dynamics(), &tables).await.unwrap();
    let (_, target) = world.destination("new").await;
    let (first, second) = (sns_certificate(), sns_certificate());
    let body = json!({
        "name": "SES events",
        "flowSpec": {"id": dynsync::specs::ENGAGEMENT_EVENTS_FLOW_SPEC, "version": "1.0"},
        "targetConnectionIds": [target],
        "provider": "ses",
        "snsCertificates": [first],
    });
    let reply = world.post("flows", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let flow = reply.json()["id"].as_str().unwrap().to_string();
    let browser = Browser::sign_in(&world, &world.service.token).await;
    let path = format!("/flows/{flow}/events");
    let (status, html) = browser.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let shown = html.split(r#"name="snsCertificates""#).nth(1).expect("an SES flow's page has the certificates box");
    assert!(shown.contains(first.lines().nth(1).unwrap()), "the pinned certificate is shown: {html}");

    let etag = world.get(&format!("flows/{flow}")).await.json()["items"][0]["etag"].as_str().unwrap().to_string();
    let own = world.service.url.clone();
    let form = |certificates: &str| {
        [
            ("etag", etag.clone()),
            ("name", "SES events".to_string()),
            ("optOutColumns", "donotbulkemail".to_string()),
            ("snsCertificates", certificates.to_string()),
        ]
    };
    let send = |form: [(&'static str, String); 4]| {
        let (browser, path, own) = (&browser, &path, &own);
        async move {
            let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            browser.post(path, own, &fields).await
        }
    };
    let (_, html) =
        send(form(&format!("{first}\n-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----"))).await;
    assert!(html.contains("snsCertificates[1]: is not PEM text"), "the bad one is named: {html}");
    let (status, location) = send(form(&format!("{first}\n{second}"))).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, format!("{path}?saved").as_str()));
    let saved = world.get(&format!("flows/{flow}")).await.json();
    assert_eq!(saved["items"][0]["snsCertificates"], json!([first.trim(), second.trim()]), "{saved}");
    world.finish().await;
}
