// The web client: sign-in, contacts, chats (live: a push says "sync", the client syncs
// with its SyncKey), Moments and the profile. The session token lives in sessionStorage
// (this origin only). As in WeChat, the server's mailbox is a sync queue, not an
// archive — what every device has synced is trimmed — so chat history is kept on the
// device: messages, the SyncKey and read marks in localStorage, per user.

import { start } from "./session.js";

start();
