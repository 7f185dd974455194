//! One CIFAR-10/100 binary batch through `Dataset::from_cifar_bytes` (what `cifar10:`/
//! `cifar100:` use). First byte: bit 0 chooses CIFAR-100.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if let Ok(set) = nac::data::Dataset::from_cifar_bytes(rest, mode & 1 != 0) {
        let labels = set.labels().unwrap();
        assert_eq!(labels.len(), set.len());
        let classes = if mode & 1 != 0 { 100 } else { 10 };
        assert!(labels.iter().all(|&l| l < classes));
        for i in [0, set.len() - 1] {
            let image = set.image(i).unwrap();
            assert_eq!((image.width, image.height, image.channels), (32, 32, 3));
        }
    }
});
