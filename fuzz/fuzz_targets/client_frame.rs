//! libFuzzer entry for [`chatroom_fuzz::client_frame`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::client_frame(data));
