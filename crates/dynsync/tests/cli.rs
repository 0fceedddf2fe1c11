//! The command line over the API, as a user runs it: `dynsync apply -f flow.toml` from a file kept in git, and the
//! list, enable and disable commands.

mod common;

use common::{Backend, World};
use tokio::process::Command;
use uuid::Uuid;

async fn dynsync(world: &World, args: &[&str], secret: Option<&str>) -> (bool, String, String) {
    let variables: Vec<(&str, &str)> = secret.map(|s| ("LOYALTY_DYNAMICS_SECRET", s)).into_iter().collect();
    dynsync_with(world, args, &variables).await
}

/// Runs dynsync against the world's service with `variables` set.
async fn dynsync_with(world: &World, args: &[&str], variables: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dynsync"));
    command
        .args(args)
        .args(["--url", &world.service.url, "--sandbox", &world.sandbox])
        .env("DYNSYNC_DATA_DIR", world.data_dir.path())
        .env_remove("DYNSYNC_TOKEN")
        .env_remove("DYNSYNC_CLIENT_SECRET")
        .envs(variables.iter().copied());
    let output = command.output().await.expect("dynsync runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn flow_file(world: &World, first_name_target: &str) -> String {
    format!(
        r#"
[connection]
name = "Contoso Dynamics"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_env = "LOYALTY_DYNAMICS_SECRET"
environment_url = "{url}"
authority_host = "{url}"

[target]
name = "Contacts"
customization_prefix = "new"

[flow]
name = "Loyalty audiences"
empty_values = "skip"

[[flow.audiences]]
id = "4f1b6d2e-gold"
name = "Gold members"
mapping_id = "gold"

[[flow.mappings]]
source = "contactId"
target = "contactid"

[[flow.mappings]]
source = "person.name.firstName"
target = "{first_name_target}"
"#,
        tenant = world.emulator.tenant_id,
        client = world.emulator.client_id,
        url = world.emulator.url,
    )
}

#[tokio::test]
async fn apply_creates_then_updates_from_a_file() {
    common::bounded(async {
        let world = World::start(Backend::Sqlite).await.unwrap();
        world.add_text_column("new_Gold", 100).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flow.toml");
        let path = file.to_str().unwrap();
        let secret = world.emulator.client_secret.expose().to_string();

        std::fs::write(&file, flow_file(&world, "firstname")).unwrap();
        let (ok, out, err) = dynsync(&world, &["apply", "-f", path], None).await;
        assert!(!ok);
        assert!(err.contains("LOYALTY_DYNAMICS_SECRET is not set"), "{out}{err}");

        let (ok, out, err) = dynsync(&world, &["apply", "-f", path], Some(&secret)).await;
        assert!(ok, "{out}{err}");
        assert!(out.contains("connection 'Contoso Dynamics' created and tested"), "{out}");
        assert!(out.contains("flow 'Loyalty audiences' created, validated and enabled"), "{out}");

        // A typo in git is caught when applied, with the field and the closest columns.
        std::fs::write(&file, flow_file(&world, "firstnme")).unwrap();
        let (ok, out, err) = dynsync(&world, &["apply", "-f", path], Some(&secret)).await;
        assert!(!ok);
        assert!(err.contains("mappings[1].target: contact has no column firstnme"), "{out}{err}");
        assert!(err.contains("Closest columns: firstname"), "{err}");

        std::fs::write(&file, flow_file(&world, "nickname")).unwrap();
        let (_, _, err) = dynsync(&world, &["apply", "-f", path], Some(&secret)).await;
        assert!(err.contains("nickname"), "{err}");
        std::fs::write(&file, flow_file(&world, "firstname")).unwrap();
        let (ok, out, err) = dynsync(&world, &["apply", "-f", path], Some(&secret)).await;
        assert!(ok, "{out}{err}");
        assert!(out.contains("connection 'Contoso Dynamics' exists"), "{out}");
        assert!(out.contains("flow 'Loyalty audiences' updated and validated"), "{out}");

        let (ok, out, err) = dynsync(&world, &["flows", "list"], None).await;
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("enabled  Loyalty audiences"), "{out}");
        let id = out.split_whitespace().next().unwrap().to_string();
        let (ok, out, _) = dynsync(&world, &["flows", "disable", &id], None).await;
        assert!(ok && out.contains("disabled"), "{out}");
        let (_, out, _) = dynsync(&world, &["flows", "list"], None).await;
        assert!(out.contains("disabled  Loyalty audiences"), "{out}");

        let (ok, out, _) = dynsync(&world, &["connections", "list"], None).await;
        assert!(ok && out.contains("connected  Contoso Dynamics"), "{out}");
        assert!(!out.contains(&secret));
        world.finish().await;
    })
    .await;
}

#[tokio::test]
async fn a_connection_from_the_command_line_or_a_file_signs_in_as_each_app_registration_it_names() {
    common::bounded(async {
        let world = World::start_with_registrations(Backend::Sqlite).await.unwrap();
        let apps = &world.emulator.applications;
        world.add_text_column("new_Gold", 100).await;
        let (main, first, second) =
            (world.emulator.client_secret.expose(), apps[0].client_secret.expose(), apps[1].client_secret.expose());
        let (first_id, second_id) = (apps[0].client_id.to_string(), apps[1].client_id.to_string());

        // From the command line: each registration's secret in a variable the flag names.
        let tenant = world.emulator.tenant_id.to_string();
        let client = world.emulator.client_id.to_string();
        let create = |name: &'static str| {
            let mut args =
                vec!["connections", "create", "--name", name, "--tenant-id", &tenant, "--client-id", &client];
            args.extend(["--environment-url", &world.emulator.url, "--authority", &world.emulator.url]);
            args
        };
        let first_flag = format!("{first_id}:FIRST_APP_SECRET");
        let second_flag = format!("{second_id}:SECOND_APP_SECRET");
        let mut args = create("Two users");
        args.extend(["--additional-registration", &first_flag, "--additional-registration", &second_flag]);
        let (ok, out, err) = dynsync_with(&world, &args, &[("DYNSYNC_CLIENT_SECRET", main)]).await;
        assert!(!ok, "{out}");
        assert!(err.contains("set FIRST_APP_SECRET to the client secret of app registration"), "{err}");
        assert!(err.contains("set SECOND_APP_SECRET"), "every missing variable at once: {err}");
        let variables = [("DYNSYNC_CLIENT_SECRET", main), ("FIRST_APP_SECRET", first), ("SECOND_APP_SECRET", second)];
        let (ok, out, err) = dynsync_with(&world, &args, &variables).await;
        assert!(ok, "{out}{err}");
        let id = out.split_whitespace().find(|w| w.parse::<Uuid>().is_ok()).expect("the new connection's id");
        let (ok, shown, err) = dynsync_with(&world, &["connections", "get", id], &[]).await;
        assert!(ok, "{err}");
        for app in [&first_id, &second_id] {
            assert!(shown.contains(app.as_str()), "each registration is listed: {shown}");
        }
        assert!(![main, first, second].iter().any(|s| shown.contains(s)), "no secret is shown: {shown}");
        let mut args = create("Half given");
        args.extend(["--additional-registration", &first_id]);
        let (ok, _, err) = dynsync_with(&world, &args, &[("DYNSYNC_CLIENT_SECRET", main)]).await;
        assert!(!ok && err.contains("is not CLIENT_ID:VARIABLE"), "{err}");

        // From a file: the same, under [[connection.additional_registrations]].
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flow.toml");
        let text = flow_file(&world, "firstname").replace(
            "\n[target]",
            &format!(
                "\n[[connection.additional_registrations]]\nclient_id = \"{second_id}\"\n\
                 client_secret_env = \"SECOND_APP_SECRET\"\n\n[target]"
            ),
        );
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap();
        let (ok, _, err) = dynsync(&world, &["apply", "-f", path], Some(main)).await;
        assert!(!ok);
        assert!(
            err.contains(&format!(
                "SECOND_APP_SECRET is not set: it holds the client secret of app registration {second_id}"
            )),
            "{err}"
        );
        let variables = [("LOYALTY_DYNAMICS_SECRET", main), ("SECOND_APP_SECRET", second)];
        let (ok, out, err) = dynsync_with(&world, &["apply", "-f", path], &variables).await;
        assert!(ok, "{out}{err}");
        assert!(out.contains("connection 'Contoso Dynamics' created and tested"), "{out}");
        let connections = world.get("connections").await.json();
        let applied =
            connections["items"].as_array().unwrap().iter().find(|c| c["name"] == "Contoso Dynamics").unwrap();
        let listed = &applied["auth"]["params"]["additionalRegistrations"];
        assert_eq!(listed, &serde_json::json!([{"clientId": second_id}]), "{applied}");
        world.finish().await;
    })
    .await;
}

#[tokio::test]
async fn import_then_runs_then_retry_failed() {
    common::bounded(async {
        let world = World::start(Backend::Sqlite).await.unwrap();
        world.add_text_column("new_Gold", 100).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flow.toml");
        let secret = world.emulator.client_secret.expose().to_string();
        std::fs::write(&file, flow_file(&world, "firstname")).unwrap();
        let (ok, out, err) = dynsync(&world, &["apply", "-f", file.to_str().unwrap()], Some(&secret)).await;
        assert!(ok, "{out}{err}");
        let (_, out, _) = dynsync(&world, &["flows", "list"], None).await;
        let flow = out.split_whitespace().next().unwrap().to_string();

        let response = world
            .dynamics()
            .send(reqwest::Method::POST, "contacts", Some(&serde_json::json!({"lastname": "Ann"})))
            .await
            .unwrap();
        let location = response.headers()["odata-entityid"].to_str().unwrap().to_string();
        let ann = location.rsplit_once('(').unwrap().1.trim_end_matches(')').to_string();
        let missing = uuid::Uuid::new_v4().to_string();
        let line = |contact: &str, name: &str| {
            serde_json::json!({"identityMap": {"contactId": [{"id": contact}]}, "person": {"name": {"firstName": name}},
                "segmentMembership": {"ups": {"4f1b6d2e-gold": {"status": "realized"}}}})
            .to_string()
        };
        let ndjson = dir.path().join("profiles.ndjson");
        std::fs::write(&ndjson, format!("{}\n{{not json\n{}\n", line(&ann, "Ann"), line(&missing, "Nobody"))).unwrap();
        let (ok, out, err) = dynsync(&world, &["import", ndjson.to_str().unwrap(), "--flow", &flow], None).await;
        assert!(!ok, "a refused line makes the import exit non-zero");
        assert!(out.contains("2 profiles accepted") && out.contains("1 refused"), "{out}{err}");
        assert!(err.contains("profiles.ndjson:2: not JSON"), "{err}");

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let table = loop {
            let (ok, out, err) = dynsync(&world, &["runs", "--flow", &flow], None).await;
            assert!(ok, "{err}");
            if out.lines().nth(1).is_some_and(|l| l.split_whitespace().nth(3) == Some("2")) {
                break out;
            }
            assert!(std::time::Instant::now() < deadline, "the run never showed both profiles: {out}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert!(table.contains("received  activated  excluded  failed"), "{table}");
        assert!(table.contains("failed 0x80040217 ×1") && table.contains(&missing), "{table}");

        world
            .dynamics()
            .send(
                reqwest::Method::PATCH,
                &format!("contacts({missing})"),
                Some(&serde_json::json!({"lastname": "Found"})),
            )
            .await
            .unwrap();
        let (ok, out, err) = dynsync(&world, &["flows", "retry-failed", &flow], None).await;
        assert!(ok, "{err}");
        assert!(out.contains("replayed 1 failed records: 1 written, 0 still failing"), "{out}");
        world.finish().await;
    })
    .await;
}

#[tokio::test]
async fn an_operator_makes_lists_and_revokes_tokens() {
    common::bounded(async {
        let Some(world) = World::start(Backend::Sqlite).await else { return };
        let args = ["tokens", "create", "--name", "ci", "--roles", "activate,view", "--sandboxes", "prod,dev"];
        let (ok, out, err) = dynsync(&world, &args, None).await;
        assert!(ok, "{err}");
        let token = out.trim().to_string();
        assert!(token.starts_with("dst_") && err.contains("shown once"), "{out}{err}");
        let (ok, out, err) = dynsync(&world, &["tokens", "list"], None).await;
        assert!(ok, "{err}");
        assert!(out.contains("active  ci") && !out.contains(&token), "{out}");
        let id = out.split_whitespace().next().unwrap().to_string();
        // The new token may not manage tokens itself.
        let (ok, _, err) = dynsync(&world, &["tokens", "list", "--token", &token], None).await;
        assert!(!ok && err.contains("operator"), "{err}");
        let (ok, out, err) = dynsync(&world, &["tokens", "revoke", &id], None).await;
        assert!(ok && out.contains("revoked"), "{out}{err}");
        let (_, out, _) = dynsync(&world, &["tokens", "list"], None).await;
        assert!(out.contains("revoked  ci"), "{out}");
        world.finish().await;
    })
    .await;
}

#[tokio::test]
async fn help_walks_a_new_user_through() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dynsync")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["demo", "serve", "connections", "targets", "flows", "tokens", "apply", "check", "runs", "import"] {
        assert!(help.contains(command), "{command} in {help}");
    }
    assert!(help.contains("dynsync apply -f flow.toml"), "{help}");
}
