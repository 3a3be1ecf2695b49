//! libFuzzer entry for [`chatroom_fuzz::quic_frames`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::quic_frames(data));
