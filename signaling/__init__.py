"""The WebRTC signaling service (on websockets): calls and meetings, SDP/ICE relay, roles and TURN
credentials. It verifies access tokens offline with the server's published keys
(``xietong.server.auth.tokens.TokenVerifier``). Built in a later part of the project."""
