// Calls to the service's own API on this origin. /ajax-api is the prefix the MLflow web UI uses
// for its calls: behind nginx it carries the same cookies/credentials as the MLflow UI.
export const API = '/ajax-api/3.0/mlflow/traces/insights/';

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error_code;
  }
}

export async function post(endpoint, body, { signal } = {}) {
  let response;
  try {
    response = await fetch(API + endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, { message: `The service did not answer (${err.message}).` });
  }
  let payload = null;
  try { payload = await response.json(); } catch { payload = null; }
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}
