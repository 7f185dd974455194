//! One CIFAR-10/100 binary batch through `Dataset::from_cifar_bytes` (what `cifar10:`/
//! `cifar100:` use). First byte: bit 0 chooses CIFAR-100.
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::cifar(data));
