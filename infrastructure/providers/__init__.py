"""Media providers: adapters of the `MediaProvider` port (HTTP JSON API, yt-dlp)."""
