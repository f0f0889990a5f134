//! The AWS IAM policy language for Nuage: parse, validate and evaluate policies, with no I/O.
//!
//! The S3, IAM and STS front ends use this crate to answer one question per request: may this
//! caller perform this action on this resource, under these conditions? It reads the JSON
//! policy documents AWS users already have (identity policies, bucket policies, role trust
//! policies, session policies) and decides the way AWS documents it, so that policies written
//! for AWS behave the same on Nuage. `docs/policy-reference.md` lists exactly what is supported
//! and where Nuage differs.
//!
//! ```
//! use nuage_policy::{Policy, PolicyKind, Principal, RequestContext, evaluate, limits};
//!
//! let policy = Policy::parse(
//!     "home-directories",
//!     r#"{
//!         "Version": "2012-10-17",
//!         "Statement": [{
//!             "Sid": "OwnHome",
//!             "Effect": "Allow",
//!             "Action": ["s3:GetObject", "s3:PutObject"],
//!             "Resource": "arn:aws:s3:::team-bucket/home/${aws:username}/*"
//!         }]
//!     }"#,
//!     PolicyKind::Identity,
//!     limits::MANAGED_POLICY_BYTES_MAX,
//! )?;
//!
//! let alice = Principal::new("arn:aws:iam::111122223333:user/alice", "111122223333")
//!     .with_user_name("alice");
//! let ctx = RequestContext::new("s3:GetObject", "arn:aws:s3:::team-bucket/home/alice/notes.txt", alice)
//!     .with_key("aws:SecureTransport", "true");
//!
//! let decision = evaluate(&ctx, &[&policy], None, &[], true);
//! assert!(decision.is_allowed());
//! assert_eq!(decision.statements[0].sid.as_deref(), Some("OwnHome"));
//! # Ok::<(), nuage_policy::PolicyError>(())
//! ```
//!
//! # Shape
//!
//! - [`Policy::parse`] turns text into a validated [`Policy`] or a [`PolicyError`] naming the
//!   statement, its `Sid` and the element at fault (for IAM's `MalformedPolicyDocument`). A
//!   document is accepted whole or not at all, and its text is kept byte for byte.
//! - [`RequestContext`] is what the front end knows about the request: action, resource ARN, the
//!   authenticated [`Principal`], and condition keys (`aws:SourceIp`, `s3:prefix`, ...).
//! - [`evaluate`] combines identity, resource and session policies into a [`Decision`] (allow,
//!   explicit deny or implicit deny) that names the statements it rests on.
//!
//! Evaluation cannot fail: everything that could go wrong is caught when the policy is parsed,
//! and a request value that cannot be compared (an unparsable IP, an unresolvable variable)
//! simply does not satisfy the statement. Nothing here reads a clock, the network or a disk;
//! time arrives as the `aws:CurrentTime` context key. Every limit is a named constant in
//! [`limits`].
//!
//! # Why not Cedar
//!
//! IAM's `NotAction`, `NotResource` and `NotPrincipal`, the `...IfExists` and
//! `ForAllValues`/`ForAnyValue` operators and policy variables have no one-to-one Cedar
//! equivalent, so a translation would change the meaning of some AWS policies. IAM and S3 must
//! also return a stored policy exactly as it was written, which a translation cannot round-trip;
//! hence this hand-written evaluator of the documents themselves.

mod arn;
mod condition;
mod context;
mod document;
mod error;
mod evaluate;
mod json;
pub mod limits;
mod pattern;
mod principal;

pub use context::RequestContext;
pub use document::{Effect, Policy, PolicyKind, Statement, Version};
pub use error::PolicyError;
pub use evaluate::{Decision, DenyKind, Outcome, PolicySource, Reason, StatementRef, evaluate};
pub use principal::{Principal, PrincipalKind};
