//! Profiles: `ProfileData::from_bytes`, then merging the profile with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.nacprofile");
    if let Ok(profile) = nac::nac::file::ProfileData::from_bytes(data, path) {
        let _ = nac::nac::file::ProfileData::merge(&[profile.clone(), profile], &["a".into(), "b".into()]);
    }
});
