// serveAdminPanel: false skips the admin UI build (minutes of webpack) that tests never use;
// the admin REST API the operator talks to is served all the same.
module.exports = ({ env }) => ({
  serveAdminPanel: false,
  auth: { secret: env('ADMIN_JWT_SECRET', 'test-admin-jwt-secret') },
  apiToken: { salt: env('API_TOKEN_SALT', 'test-api-token-salt') },
  transfer: { token: { salt: env('TRANSFER_TOKEN_SALT', 'test-transfer-token-salt') } },
  secrets: { encryptionKey: env('ENCRYPTION_KEY', 'test-encryption-key-of-32-chars!') },
});
