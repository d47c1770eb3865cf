//! Names and hashes kcp derives from content: the CachedObject name and the identity hash.
//!
//! A CachedObject's name is the base36 form of SHA-256(`<g>/<v>, Resource=<r>` + namespace +
//! name) (`kcp-reference.md` §1.3); an identity hash is the lower-case hex SHA-256 of a
//! Secret's `data.key` bytes (§2.4).

use sha2::{Digest, Sha256};

/// The CachedObject name for a wrapped object. An empty group is written as `core`.
pub fn cached_object_name(
    group: &str,
    version: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> String {
    let group = if group.is_empty() { "core" } else { group };
    let text = format!("{group}/{version}, Resource={resource}{namespace}{name}");
    base36_lower(&Sha256::digest(text.as_bytes()))
}

/// Base36 of a big-endian unsigned integer, with one `0` per leading zero byte, lower-case.
fn base36_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits: Vec<u8> = Vec::with_capacity(52);
    let mut num: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    while !num.is_empty() {
        let mut rem: u32 = 0;
        let mut next = Vec::with_capacity(num.len());
        for &b in &num {
            let acc = rem * 256 + u32::from(b);
            let q = acc / 36;
            rem = acc % 36;
            if !next.is_empty() || q != 0 {
                next.push(q as u8);
            }
        }
        digits.push(ALPHABET[rem as usize]);
        num = next;
    }
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    digits.extend(std::iter::repeat_n(b'0', zeros));
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

/// The identity hash of an identity key: lower-case hex SHA-256 of exactly those bytes.
pub fn identity_hash(key: &[u8]) -> String {
    hex::encode(Sha256::digest(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_object_names_match_kcp_test_vectors() {
        let cases = [
            (
                "group-1",
                "v1",
                "resource-1",
                "",
                "a-resource",
                "6dgup41jy1ta41gc4q4hb1hdnmrdgl4rdn5ux0t8ya9nhk3jo6",
            ),
            (
                "cloud.example.com",
                "v1",
                "cpuflavors",
                "",
                "cpu-small",
                "92k7fjvr2dwuyncnkt87kyf2wzsw6h421v96lrighsy0946u0",
            ),
            (
                "cloud.example.com",
                "v1",
                "cpuflavors",
                "",
                "cpu-large",
                "24tzjefzgsqmp4fwfklmaqjbvuu392mq8hpkm3s2rvo4hzelah",
            ),
            (
                "wildwest.dev",
                "v1alpha1",
                "sheriffs",
                "",
                "sheriff-1",
                "2zsr3e6gw04e9ylz4i844urvah24u1ut7gkdno0zznvbz9l7gu",
            ),
            (
                "machines.svm.io",
                "v1alpha1",
                "instances",
                "",
                "web-server-1",
                "j15t85hp581ti75lqratap2w8yeetcpda0mk3tfpkdy9tu13m",
            ),
            (
                "",
                "v1",
                "configmaps",
                "default",
                "foo",
                "3f4tnvmq9ylnbe307fj6ds5o6r24175043qcl8qpui7z9jws1",
            ),
        ];
        for (g, v, r, ns, n, want) in cases {
            assert_eq!(
                cached_object_name(g, v, r, ns, n),
                want,
                "{g}/{v}/{r} {ns}/{n}"
            );
        }
    }

    #[test]
    fn leading_zero_bytes_become_leading_zero_digits() {
        assert_eq!(base36_lower(&[0, 0, 1]), "001");
        assert_eq!(base36_lower(&[0, 36]), "010");
    }

    #[test]
    fn identity_hashes_match_the_documented_vectors() {
        assert_eq!(
            identity_hash(b"instances-cr-identity-123"),
            "676a1a997f7507fdfcfd1fcf35920efdff1297cd215cad4f486220c30a5c7090"
        );
        assert_eq!(
            identity_hash(b"cpuflavors-v1-identity-key"),
            "fc9f48c915adefcd3fe029bb4fc92a435f373eb8ef32ae64ad1d37d4bca736c8"
        );
    }
}
