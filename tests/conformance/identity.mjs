// The identity REST API as the token-lifetime scenarios use it: logins, refresh, logout, devices
// and the admin revoke, each answering `{status, body}`.

import { BASE_URL } from "./harness.mjs";

async function call(method, path, { token, body } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(BASE_URL + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: response.status, body: parsed };
}

export const USERS = (process.env.SIGNET_TEST_USERS || "").split(",").filter(Boolean);
export const PASSWORD = process.env.SIGNET_TEST_PASSWORD;
export const ADMIN = {
  username: process.env.SIGNET_LOGIN_USERNAME,
  password: process.env.SIGNET_LOGIN_PASSWORD,
};

/** Logs in; returns the body (`accessToken`, `refreshToken`, ...) or throws. */
export async function login(username, password = PASSWORD) {
  const answer = await call("POST", "/api/auth/login", { body: { username, password } });
  if (answer.status !== 200) throw new Error(`login of ${username}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

export const refresh = (refreshToken) => call("POST", "/api/auth/refresh", { body: { refreshToken } });
export const logout = (session) =>
  call("POST", "/api/auth/logout", { token: session.accessToken, body: { refreshToken: session.refreshToken } });
export const me = (token) => call("GET", "/api/auth/me", { token });
export const createDevice = (token, name) => call("POST", "/api/devices", { token, body: { name } });
export const deleteDevice = (token, id) => call("DELETE", `/api/devices/${id}`, { token });
export const deviceToken = (deviceId, deviceKey) =>
  call("POST", "/api/auth/device-token", { body: { deviceId, deviceKey } });
export const adminRevoke = (token, username) =>
  call("POST", `/api/admin/users/${encodeURIComponent(username)}/revoke`, { token });
export const refreshConnection = (connectionToken, token) =>
  call("POST", `/hubs/home/refresh?id=${encodeURIComponent(connectionToken ?? "")}`, { token });
