//! libFuzzer entry for [`chatroom_fuzz::admin_config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::admin_config(data));
