{
  "targets": [
    {
      "target_name": "fdpass",
      "sources": [
        "native/addon.c",
        "native/args.c",
        "native/unix.c",
        "native/cmsg.c",
        "native/msgio.c",
        "native/scratch.c",
        "native/inet.c",
        "native/creds.c",
        "native/poll.c",
        "native/handoff.c"
      ],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
