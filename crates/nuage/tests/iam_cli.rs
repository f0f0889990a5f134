//! IAM and STS through the real aws CLI against the real binary: a tenant
//! administrator creates a user, gives it a policy that allows one prefix, and
//! that user can write there and nowhere else; temporary credentials from
//! GetSessionToken and AssumeRole; malformed policies; deactivated keys.
//!
//! The CLI comes from `scripts/install-test-deps.sh` (or `NUAGE_AWS_CLI`).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use std::path::PathBuf;
use std::process::Command;

/// Credentials a CLI invocation signs with.
#[derive(Clone)]
struct Creds {
    key: String,
    secret: String,
    token: Option<String>,
}

/// The outcome of one CLI run.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Fails the test unless the command succeeded; returns its trimmed output.
    fn out(&self) -> &str {
        assert!(self.ok, "aws failed: {}", self.stderr);
        self.stdout.trim()
    }

    /// Fails the test unless the command failed with `code`.
    fn refused_with(&self, code: &str) {
        assert!(
            !self.ok,
            "aws should have failed with {code}; printed {}",
            self.stdout
        );
        assert!(
            self.stderr.contains(code),
            "expected {code}, got: {}",
            self.stderr
        );
    }
}

struct Cli {
    aws: PathBuf,
    endpoint: String,
    region: String,
    home: tempfile::TempDir,
}

impl Cli {
    fn new(server: &common::Server) -> Self {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("aws-config"),
            format!(
                "[default]\nregion = {}\ns3 =\n  addressing_style = path\n",
                server.credentials.region
            ),
        )
        .unwrap();
        Self {
            aws: common::aws_cli(),
            endpoint: server.endpoint.clone(),
            region: server.credentials.region.clone(),
            home,
        }
    }

    /// Runs `aws ARGS` with only these credentials: no profile, config or
    /// instance metadata of the machine can leak in, and no retries hide a 500.
    fn run(&self, creds: &Creds, args: &[&str]) -> Run {
        let mut command = Command::new(&self.aws);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("AWS_CONFIG_FILE", self.home.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.path().join("absent"),
            )
            .env("AWS_ACCESS_KEY_ID", &creds.key)
            .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
            .env("AWS_DEFAULT_REGION", &self.region)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_PAGER", "")
            .args(["--endpoint-url", &self.endpoint, "--output", "text"])
            .args(args);
        if let Some(token) = &creds.token {
            command.env("AWS_SESSION_TOKEN", token);
        }
        let output = command.output().unwrap();
        Run {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// A file in the client's home, for uploads.
    fn file(&self, name: &str, content: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn admin(server: &common::Server) -> Creds {
    Creds {
        key: server.credentials.access_key_id.clone(),
        secret: server.credentials.secret_access_key.clone(),
        token: None,
    }
}

/// `KEY\tSECRET[\tTOKEN]` as printed by `--output text`.
fn creds_from(text: &str) -> Creds {
    let fields: Vec<&str> = text.split_whitespace().collect();
    Creds {
        key: fields[0].to_owned(),
        secret: fields[1].to_owned(),
        token: fields.get(2).map(|t| (*t).to_owned()),
    }
}

/// Writes and reads under `team/` only; lists only with a `team/` prefix.
fn team_policy(bucket: &str) -> String {
    format!(
        r#"{{
  "Version": "2012-10-17",
  "Statement": [
    {{"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "arn:aws:s3:::{bucket}/team/*"}},
    {{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::{bucket}",
      "Condition": {{"StringLike": {{"s3:prefix": "team/*"}}}}}}
  ]
}}"#
    )
}

/// Creates user `name` with the team policy and returns its key.
fn team_user(cli: &Cli, admin: &Creds, name: &str, bucket: &str) -> (String, Creds) {
    let arn = cli.run(
        admin,
        &[
            "iam",
            "create-user",
            "--user-name",
            name,
            "--query",
            "User.Arn",
        ],
    );
    let arn = arn.out().to_owned();
    let policy = team_policy(bucket);
    let put = [
        "iam",
        "put-user-policy",
        "--user-name",
        name,
        "--policy-name",
        "team-prefix",
    ];
    cli.run(admin, &[&put[..], &["--policy-document", &policy]].concat())
        .out();
    // The document comes back as written.
    let got = cli.run(
        admin,
        &[
            "iam",
            "get-user-policy",
            "--user-name",
            name,
            "--policy-name",
            "team-prefix",
            "--output",
            "json",
        ],
    );
    assert!(
        got.out().contains(&format!("arn:aws:s3:::{bucket}/team/*")),
        "{}",
        got.stdout
    );
    let key = cli.run(
        admin,
        &[
            "iam",
            "create-access-key",
            "--user-name",
            name,
            "--query",
            "AccessKey.[AccessKeyId,SecretAccessKey]",
        ],
    );
    (arn, creds_from(key.out()))
}

#[test]
fn a_user_limited_to_one_prefix_writes_there_and_nowhere_else() {
    let server = common::Server::start();
    let cli = Cli::new(&server);
    let admin = admin(&server);
    let bucket = common::bucket_name("iam-cli");
    cli.run(&admin, &["s3", "mb", &format!("s3://{bucket}")])
        .out();
    let (arn, writer) = team_user(&cli, &admin, "writer", &bucket);
    let file = cli.file("report.txt", "quarterly numbers");

    // Who am I.
    let who = cli.run(&writer, &["sts", "get-caller-identity", "--query", "Arn"]);
    assert_eq!(who.out(), arn);
    assert!(arn.ends_with(":user/writer"), "{arn}");

    // One prefix, and nowhere else.
    cli.run(
        &writer,
        &["s3", "cp", &file, &format!("s3://{bucket}/team/report.txt")],
    )
    .out();
    cli.run(
        &writer,
        &[
            "s3",
            "cp",
            &file,
            &format!("s3://{bucket}/other/report.txt"),
        ],
    )
    .refused_with("AccessDenied");
    let read = cli.run(
        &writer,
        &["s3", "cp", &format!("s3://{bucket}/team/report.txt"), "-"],
    );
    assert_eq!(read.out(), "quarterly numbers");
    let listed = cli.run(&writer, &["s3", "ls", &format!("s3://{bucket}/team/")]);
    assert!(listed.out().contains("report.txt"), "{}", listed.stdout);
    cli.run(&writer, &["s3", "ls", &format!("s3://{bucket}/")])
        .refused_with("AccessDenied");
    // The user cannot administer IAM.
    cli.run(&writer, &["iam", "create-user", "--user-name", "mallory"])
        .refused_with("AccessDenied");

    // The administrator sees when and where the writer's key was last used.
    let last_used = cli.run(
        &admin,
        &[
            "iam",
            "get-access-key-last-used",
            "--access-key-id",
            &writer.key,
            "--query",
            "[UserName,AccessKeyLastUsed.ServiceName,AccessKeyLastUsed.Region,AccessKeyLastUsed.LastUsedDate]",
        ],
    );
    let fields: Vec<&str> = last_used.out().split_whitespace().collect();
    assert_eq!(
        fields[..3],
        ["writer", "s3", server.credentials.region.as_str()],
        "{fields:?}"
    );
    assert!(fields[3].starts_with("20"), "a last-used date: {fields:?}");

    // Temporary credentials: they work with their token, not without it.
    let session = cli.run(
        &writer,
        &[
            "sts",
            "get-session-token",
            "--duration-seconds",
            "900",
            "--query",
            "Credentials.[AccessKeyId,SecretAccessKey,SessionToken]",
        ],
    );
    let session = creds_from(session.out());
    assert!(session.token.is_some());
    let session_who = cli.run(&session, &["sts", "get-caller-identity", "--query", "Arn"]);
    assert_eq!(session_who.out(), arn);
    cli.run(
        &session,
        &[
            "s3",
            "cp",
            &file,
            &format!("s3://{bucket}/team/from-session.txt"),
        ],
    )
    .out();
    cli.run(
        &session,
        &[
            "s3",
            "cp",
            &file,
            &format!("s3://{bucket}/other/from-session.txt"),
        ],
    )
    .refused_with("AccessDenied");
    let tokenless = Creds {
        token: None,
        ..session.clone()
    };
    let refused = cli.run(
        &tokenless,
        &[
            "s3",
            "cp",
            &file,
            &format!("s3://{bucket}/team/no-token.txt"),
        ],
    );
    assert!(
        !refused.ok,
        "a session key without its token must be refused"
    );
    cli.run(&tokenless, &["sts", "get-caller-identity"])
        .refused_with("InvalidClientTokenId");

    // A malformed policy is refused with the reason.
    let bad = cli.run(
        &admin,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "writer",
            "--policy-name",
            "broken",
            "--policy-document",
            r#"{"Version": "2012-10-17", "Statement": 1}"#,
        ],
    );
    bad.refused_with("MalformedPolicyDocument");

    // Listing pages through the Marker (one user per page).
    let users = cli.run(
        &admin,
        &[
            "iam",
            "list-users",
            "--page-size",
            "1",
            "--query",
            "Users[].UserName",
        ],
    );
    let names: Vec<&str> = users.out().split_whitespace().collect();
    assert_eq!(names, ["admin", "writer"]);

    // A deactivated key is refused by S3 and by IAM/STS.
    let update = [
        "iam",
        "update-access-key",
        "--user-name",
        "writer",
        "--access-key-id",
        &writer.key,
        "--status",
        "Inactive",
    ];
    cli.run(&admin, &update).out();
    let keys = cli.run(
        &admin,
        &[
            "iam",
            "list-access-keys",
            "--user-name",
            "writer",
            "--query",
            "AccessKeyMetadata[].Status",
        ],
    );
    assert_eq!(keys.out(), "Inactive");
    cli.run(&writer, &["s3", "ls", &format!("s3://{bucket}/team/")])
        .refused_with("InvalidAccessKeyId");
    cli.run(&writer, &["sts", "get-caller-identity"])
        .refused_with("InvalidClientTokenId");
}

#[test]
fn an_assumed_role_acts_with_the_role_policies() {
    let server = common::Server::start();
    let cli = Cli::new(&server);
    let admin = admin(&server);
    let bucket = common::bucket_name("iam-role");
    cli.run(&admin, &["s3", "mb", &format!("s3://{bucket}")])
        .out();
    let (user_arn, writer) = team_user(&cli, &admin, "writer", &bucket);
    let file = cli.file("shared.txt", "for everyone");

    // A role the writer may assume, allowed to write under shared/ only.
    let trust = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{user_arn}"}}, "Action": "sts:AssumeRole"}}]}}"#
    );
    let role = cli.run(
        &admin,
        &[
            "iam",
            "create-role",
            "--role-name",
            "publisher",
            "--assume-role-policy-document",
            &trust,
            "--query",
            "Role.Arn",
        ],
    );
    let role_arn = role.out().to_owned();
    let role_policy = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::{bucket}/shared/*"}}]}}"#
    );
    cli.run(
        &admin,
        &[
            "iam",
            "put-role-policy",
            "--role-name",
            "publisher",
            "--policy-name",
            "shared",
            "--policy-document",
            &role_policy,
        ],
    )
    .out();

    // The trust policy names the writer, not the administrator.
    let assume = [
        "sts",
        "assume-role",
        "--role-arn",
        &role_arn,
        "--role-session-name",
        "nightly",
    ];
    cli.run(&admin, &assume).refused_with("AccessDenied");
    let assumed = cli.run(
        &writer,
        &[
            &assume[..],
            &[
                "--query",
                "Credentials.[AccessKeyId,SecretAccessKey,SessionToken]",
            ],
        ]
        .concat(),
    );
    let session = creds_from(assumed.out());
    let who = cli.run(&session, &["sts", "get-caller-identity", "--query", "Arn"]);
    assert!(
        who.out().ends_with(":assumed-role/publisher/nightly"),
        "{}",
        who.stdout
    );

    // The role's policies apply, not the user's.
    cli.run(
        &session,
        &["s3", "cp", &file, &format!("s3://{bucket}/shared/a.txt")],
    )
    .out();
    cli.run(
        &session,
        &["s3", "cp", &file, &format!("s3://{bucket}/team/a.txt")],
    )
    .refused_with("AccessDenied");

    // A session policy narrows the role further; a malformed one is refused.
    let narrow = format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::{bucket}/shared/reports/*"}}]}}"#
    );
    let narrowed = cli.run(
        &writer,
        &[
            &assume[..],
            &[
                "--policy",
                &narrow,
                "--query",
                "Credentials.[AccessKeyId,SecretAccessKey,SessionToken]",
            ],
        ]
        .concat(),
    );
    let narrowed = creds_from(narrowed.out());
    cli.run(
        &narrowed,
        &[
            "s3",
            "cp",
            &file,
            &format!("s3://{bucket}/shared/reports/b.txt"),
        ],
    )
    .out();
    cli.run(
        &narrowed,
        &["s3", "cp", &file, &format!("s3://{bucket}/shared/b.txt")],
    )
    .refused_with("AccessDenied");
    cli.run(
        &writer,
        &[&assume[..], &["--policy", "{\"Statement\": 1}"]].concat(),
    )
    .refused_with("MalformedPolicyDocument");
    // A role session cannot administer IAM without an IAM policy.
    cli.run(&session, &["iam", "list-users"])
        .refused_with("AccessDenied");
}
