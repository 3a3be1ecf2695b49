//! libFuzzer entry for [`chatroom_fuzz::token`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::token(data));
