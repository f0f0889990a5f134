//! The KMS JSON API through the real aws CLI against the real binary: keys and
//! aliases, encrypt/decrypt round trips with binary files, encryption context
//! binding, data keys, rotation (old ciphertext keeps decrypting), disabled
//! and pending-deletion keys, and a user without KMS permissions.
//!
//! The CLI comes from `scripts/install-test-deps.sh` (or `NUAGE_AWS_CLI`).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::path::PathBuf;
use std::process::Command;

#[derive(Clone)]
struct Creds {
    key: String,
    secret: String,
}

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
            self.stderr.contains(&format!("({code})")),
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
            format!("[default]\nregion = {}\n", server.credentials.region),
        )
        .unwrap();
        Self {
            aws: common::aws_cli(),
            endpoint: server.endpoint.clone(),
            region: server.credentials.region.clone(),
            home,
        }
    }

    /// Runs `aws ARGS --output text` with only these credentials: no profile,
    /// config or instance metadata of the machine can leak in, and no retries
    /// hide an error.
    fn run(&self, creds: &Creds, args: &[&str]) -> Run {
        let output = Command::new(&self.aws)
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
            .args(args)
            .output()
            .unwrap();
        Run {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// A binary file in the client's home, as a `fileb://` argument.
    fn file(&self, name: &str, content: &[u8]) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, content).unwrap();
        format!("fileb://{}", path.display())
    }
}

fn admin(server: &common::Server) -> Creds {
    Creds {
        key: server.credentials.access_key_id.clone(),
        secret: server.credentials.secret_access_key.clone(),
    }
}

/// Encrypts `plaintext` with the CLI and returns the ciphertext blob's bytes.
fn encrypt(cli: &Cli, creds: &Creds, key: &str, plaintext: &[u8], context: &str) -> Vec<u8> {
    let input = cli.file("plaintext.bin", plaintext);
    let blob = cli.run(
        creds,
        &[
            "kms",
            "encrypt",
            "--key-id",
            key,
            "--plaintext",
            &input,
            "--encryption-context",
            context,
            "--query",
            "CiphertextBlob",
        ],
    );
    BASE64.decode(blob.out()).unwrap()
}

/// Decrypts a ciphertext blob given as a file, with `context`.
fn decrypt(cli: &Cli, creds: &Creds, blob: &[u8], context: &str) -> Run {
    let input = cli.file("ciphertext.bin", blob);
    cli.run(
        creds,
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &input,
            "--encryption-context",
            context,
            "--query",
            "Plaintext",
        ],
    )
}

fn decrypted(run: &Run) -> Vec<u8> {
    BASE64.decode(run.out()).unwrap()
}

#[test]
fn aws_kms_cli_end_to_end() {
    let server = common::Server::start();
    let cli = Cli::new(&server);
    let admin = admin(&server);

    // Keys and aliases.
    let key_id = cli
        .run(
            &admin,
            &[
                "kms",
                "create-key",
                "--description",
                "cli test key",
                "--query",
                "KeyMetadata.KeyId",
            ],
        )
        .out()
        .to_owned();
    assert_eq!(key_id.len(), 36, "a UUID: {key_id}");
    cli.run(
        &admin,
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/cli-test",
            "--target-key-id",
            &key_id,
        ],
    )
    .out();
    let described = cli.run(
        &admin,
        &[
            "kms",
            "describe-key",
            "--key-id",
            "alias/cli-test",
            "--query",
            "KeyMetadata.[KeyId,KeyState,Arn]",
        ],
    );
    let fields: Vec<&str> = described.out().split_whitespace().collect();
    assert_eq!(fields[0], key_id);
    assert_eq!(fields[1], "Enabled");
    let arn = fields[2].to_owned();
    assert!(arn.starts_with("arn:aws:kms:") && arn.ends_with(&format!(":key/{key_id}")));
    let keys = cli.run(&admin, &["kms", "list-keys", "--query", "Keys[].KeyId"]);
    assert!(keys.out().contains(&key_id));
    let aliases = cli.run(
        &admin,
        &["kms", "list-aliases", "--query", "Aliases[].AliasName"],
    );
    assert!(aliases.out().contains("alias/cli-test"));

    // Encrypt/decrypt round trip of binary data through files.
    let plaintext: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let blob = encrypt(&cli, &admin, "alias/cli-test", &plaintext, "purpose=test");
    assert_eq!(blob[0], 1, "format version");
    assert_eq!(
        decrypted(&decrypt(&cli, &admin, &blob, "purpose=test")),
        plaintext
    );
    // The encryption context is bound: any other one fails.
    decrypt(&cli, &admin, &blob, "purpose=other").refused_with("InvalidCiphertextException");

    // Data keys: the plaintext key and its blob, which decrypts to it.
    let data_key = cli.run(
        &admin,
        &[
            "kms",
            "generate-data-key",
            "--key-id",
            &arn,
            "--key-spec",
            "AES_256",
            "--encryption-context",
            "object=a",
            "--query",
            "[Plaintext,CiphertextBlob]",
        ],
    );
    let parts: Vec<&str> = data_key.out().split_whitespace().collect();
    let data_plaintext = BASE64.decode(parts[0]).unwrap();
    assert_eq!(data_plaintext.len(), 32);
    let data_blob = BASE64.decode(parts[1]).unwrap();
    assert_eq!(
        decrypted(&decrypt(&cli, &admin, &data_blob, "object=a")),
        data_plaintext
    );
    let random = cli.run(
        &admin,
        &[
            "kms",
            "generate-random",
            "--number-of-bytes",
            "24",
            "--query",
            "Plaintext",
        ],
    );
    assert_eq!(BASE64.decode(random.out()).unwrap().len(), 24);

    // Rotation: automatic schedule on, one rotation now, listed; old
    // ciphertext still decrypts and new ciphertext uses the new material.
    cli.run(&admin, &["kms", "enable-key-rotation", "--key-id", &key_id])
        .out();
    let status = cli.run(
        &admin,
        &[
            "kms",
            "get-key-rotation-status",
            "--key-id",
            &key_id,
            "--query",
            "KeyRotationEnabled",
        ],
    );
    assert_eq!(status.out(), "True");
    cli.run(
        &admin,
        &["kms", "rotate-key-on-demand", "--key-id", &key_id],
    )
    .out();
    let rotations = cli.run(
        &admin,
        &[
            "kms",
            "list-key-rotations",
            "--key-id",
            &key_id,
            "--query",
            "Rotations[].RotationType",
        ],
    );
    assert_eq!(rotations.out(), "ON_DEMAND");
    assert_eq!(
        decrypted(&decrypt(&cli, &admin, &blob, "purpose=test")),
        plaintext,
        "ciphertext from before the rotation"
    );
    let after = encrypt(&cli, &admin, &key_id, b"after rotation", "purpose=test");
    assert_eq!(
        &after[17..21],
        &[0, 0, 0, 2],
        "sealed with material version 2"
    );
    assert_eq!(
        decrypted(&decrypt(&cli, &admin, &after, "purpose=test")),
        b"after rotation"
    );

    // A disabled key refuses to encrypt.
    cli.run(&admin, &["kms", "disable-key", "--key-id", &key_id])
        .out();
    let input = cli.file("small.bin", b"x");
    let encrypt_small = ["kms", "encrypt", "--key-id", &key_id, "--plaintext", &input];
    cli.run(&admin, &encrypt_small)
        .refused_with("DisabledException");
    cli.run(&admin, &["kms", "enable-key", "--key-id", &key_id])
        .out();
    cli.run(&admin, &encrypt_small).out();

    // Scheduled for deletion: every use refused, until cancelled (then disabled).
    let scheduled = cli.run(
        &admin,
        &[
            "kms",
            "schedule-key-deletion",
            "--key-id",
            &key_id,
            "--pending-window-in-days",
            "7",
            "--query",
            "KeyState",
        ],
    );
    assert_eq!(scheduled.out(), "PendingDeletion");
    cli.run(&admin, &encrypt_small)
        .refused_with("KMSInvalidStateException");
    decrypt(&cli, &admin, &blob, "purpose=test").refused_with("KMSInvalidStateException");
    cli.run(
        &admin,
        &[
            "kms",
            "schedule-key-deletion",
            "--key-id",
            &key_id,
            "--pending-window-in-days",
            "3",
        ],
    )
    .refused_with("ValidationException");
    cli.run(&admin, &["kms", "cancel-key-deletion", "--key-id", &key_id])
        .out();
    let state = cli.run(
        &admin,
        &[
            "kms",
            "describe-key",
            "--key-id",
            &key_id,
            "--query",
            "KeyMetadata.KeyState",
        ],
    );
    assert_eq!(state.out(), "Disabled");
    cli.run(&admin, &["kms", "enable-key", "--key-id", &key_id])
        .out();
    assert_eq!(
        decrypted(&decrypt(&cli, &admin, &blob, "purpose=test")),
        plaintext
    );

    // A user of the same tenant without KMS permissions.
    cli.run(&admin, &["iam", "create-user", "--user-name", "no-kms"])
        .out();
    let s3_only = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    cli.run(
        &admin,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "no-kms",
            "--policy-name",
            "s3-only",
            "--policy-document",
            s3_only,
        ],
    )
    .out();
    let created = cli.run(
        &admin,
        &[
            "iam",
            "create-access-key",
            "--user-name",
            "no-kms",
            "--query",
            "AccessKey.[AccessKeyId,SecretAccessKey]",
        ],
    );
    let fields: Vec<&str> = created.out().split_whitespace().collect();
    let user = Creds {
        key: fields[0].to_owned(),
        secret: fields[1].to_owned(),
    };
    cli.run(&user, &encrypt_small)
        .refused_with("AccessDeniedException");
    decrypt(&cli, &user, &blob, "purpose=test").refused_with("AccessDeniedException");
    cli.run(&user, &["kms", "list-keys"])
        .refused_with("AccessDeniedException");
    cli.run(&user, &["kms", "create-key"])
        .refused_with("AccessDeniedException");
}
