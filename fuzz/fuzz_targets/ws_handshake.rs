//! libFuzzer entry for [`chatroom_fuzz::ws_handshake`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::ws_handshake(data));
