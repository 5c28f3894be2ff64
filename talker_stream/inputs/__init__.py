"""Ways in that are not chat platforms: the terminal and the microphone (chat); the HTTP
say/interrupt API and the browser's microphone live with the server (server/)."""
