"""The command-line client: `mediatasks submit/tasks/subtitles/video/webhooks` against a running server."""
