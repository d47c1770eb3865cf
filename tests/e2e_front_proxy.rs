//! End-to-end: kcp's front-proxy reaches a virtual workspace with a client certificate from
//! the request-header CA and names the user in `X-Remote-User`/`X-Remote-Group`; the server
//! honours those headers on that connection only.

mod common;

use common::{Server, TEAM_A};
use std::time::Duration;

/// A CA (written to `dir`) and a client certificate with each common name it signs (PEM
/// certificate + key, as reqwest takes an identity).
fn front_proxy_pki(dir: &std::path::Path, names: &[&str]) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "front-proxy-ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let identities = names
        .iter()
        .map(|cn| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *cn);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &issuer).expect("client certificate");
            let mut identity = cert.pem().into_bytes();
            identity.extend(key.serialize_pem().into_bytes());
            identity
        })
        .collect();
    let ca_file = dir.join("front-proxy-ca.crt");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    (ca_file, identities)
}

fn client(server: &Server, identity: Option<&[u8]>) -> reqwest::Client {
    replication_vw::server::tls::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.ca()).expect("CA")).expect("CA");
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(20));
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem).expect("identity"));
    }
    b.build().expect("client")
}

/// (status, body) of a list of cpuflavors through the virtual workspace.
async fn list(
    server: &Server,
    client: &reqwest::Client,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client.get(format!(
        "{}/apis/cloud.example.com/v1/cpuflavors",
        server.vw("cpuflavors-v1", TEAM_A)
    ));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the request is answered");
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn front_proxy_headers_act_as_the_named_user_only_on_a_front_proxy_connection() {
    let pki_dir = tempfile::tempdir().expect("temp dir");
    let (proxy_ca, identities) = front_proxy_pki(pki_dir.path(), &["front-proxy", "stranger"]);
    let (proxy_identity, stranger_identity) = (&identities[0], &identities[1]);
    let repo = common::repo();
    let server = Server::start(&[
        "--seed",
        repo.join("examples/cloud-co").to_str().expect("utf-8"),
        "--token-auth-file",
        repo.join("examples/cloud-co/tokens.csv")
            .to_str()
            .expect("utf-8"),
        "--requestheader-client-ca-file",
        proxy_ca.to_str().expect("utf-8"),
        "--requestheader-allowed-names",
        "front-proxy",
    ]);
    let proxy = client(&server, Some(proxy_identity));
    // The front proxy says alice: alice may read the export's content.
    let (code, body) = list(&server, &proxy, &[("X-Remote-User", "alice")]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("cpu-small"), "{body}");
    // The front proxy says bob: bob may not, and the refusal names bob.
    let (code, body) = list(
        &server,
        &proxy,
        &[("X-Remote-User", "bob"), ("X-Remote-Group", "team-b")],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("User \\\"bob\\\""), "{body}");
    // A plain client certificate (system:masters) with the same headers stays itself.
    let (code, body) = list(&server, &server.admin_client(), &[("X-Remote-User", "bob")]).await;
    assert_eq!(
        code, 200,
        "the admin certificate is not turned into bob: {body}"
    );
    // A bearer token with the headers stays the token's user.
    let (code, body) = list(
        &server,
        &server.token_client(),
        &[
            ("Authorization", "Bearer bob-token"),
            ("X-Remote-User", "alice"),
        ],
    )
    .await;
    assert_eq!(code, 403, "bob's token does not become alice: {body}");
    assert!(body.contains("User \\\"bob\\\""), "{body}");
    // The headers from nobody at all grant nothing.
    let (code, _) = list(
        &server,
        &server.token_client(),
        &[("X-Remote-User", "alice")],
    )
    .await;
    assert_eq!(code, 401, "an anonymous caller is not alice");
    // A certificate of the request-header CA whose name is not allowed is not a front proxy;
    // the handshake still accepts it, but the headers are ignored.
    let stranger = client(&server, Some(stranger_identity));
    let (code, _) = list(&server, &stranger, &[("X-Remote-User", "alice")]).await;
    assert_eq!(
        code, 401,
        "a front-proxy CA certificate with another name is not alice"
    );
}
