//! The PKI on disk: a CA, component certificates naming their hosts, keys private, the CA never
//! replaced, and certificates read back.

use std::os::unix::fs::PermissionsExt;

use capstan_pki::{Ca, PkiError, covers, names};

#[test]
fn a_ca_issues_certificates_naming_their_hosts_with_private_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = dir.path().join("pki");
    let ca = Ca::create(&pki, "capstan test CA").expect("ca");
    let issued = ca
        .issue(
            "agent-1",
            &["agent-1.lan".to_string(), "10.0.0.7".to_string()],
            30,
        )
        .expect("issue");
    let pem = std::fs::read(&issued.cert).expect("cert");
    let n = names(&pem, "agent-1.pem").expect("names");
    assert_eq!(n, vec!["agent-1.lan".to_string(), "10.0.0.7".to_string()]);
    assert!(covers(&n, "10.0.0.7") && !covers(&n, "127.0.0.1"));
    for key in [pki.join("ca.key"), issued.key.clone()] {
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    // The CA is never replaced; a loaded CA issues as the created one did (rotation).
    assert!(matches!(
        Ca::create(&pki, "again"),
        Err(PkiError::CaExists(_))
    ));
    let again = Ca::load(&pki)
        .expect("load")
        .issue("agent-1", &["agent-1.lan".into()], 30);
    let n = names(
        &std::fs::read(&again.expect("reissue").cert).expect("cert"),
        "x",
    )
    .expect("names");
    assert_eq!(n, vec!["agent-1.lan".to_string()]);
    // Bad input is refused with what to do.
    let ca = Ca::load(&pki).expect("load");
    assert!(matches!(
        ca.issue("../x", &["h".into()], 1),
        Err(PkiError::BadName(_))
    ));
    assert!(matches!(ca.issue("x", &[], 1), Err(PkiError::NoHosts)));
    assert!(matches!(
        names(b"not a certificate", "junk.pem"),
        Err(PkiError::BadCertificate { .. })
    ));
}
