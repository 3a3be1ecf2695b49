//! libFuzzer entry for [`chatroom_fuzz::ws_frames`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::ws_frames(data));
