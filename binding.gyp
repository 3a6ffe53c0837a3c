{
  "targets": [
    {
      "target_name": "fdpass",
      "sources": ["native/fdpass.c", "native/poll.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
