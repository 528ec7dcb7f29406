// serveAdminPanel: false skips the admin UI build (minutes of webpack) that tests never use;
// the admin REST API the operator talks to is served all the same.
module.exports = ({ env }) => ({
  serveAdminPanel: false,
  auth: {
    secret: env('ADMIN_JWT_SECRET', 'test-admin-jwt-secret'),
    // Strapi's default is 30 minutes; the token-renewal test shortens it to see a real expiry.
    sessions: { accessTokenLifespan: env.int('ADMIN_ACCESS_TOKEN_LIFESPAN', 30 * 60) },
  },
  // Strapi allows 5 logins per 5 minutes per email; every test process logs in once to the
  // shared Strapi, so the limit is off unless a test asks for Strapi's real behaviour.
  rateLimit: { enabled: env.bool('ADMIN_RATE_LIMIT', false) },
  apiToken: { salt: env('API_TOKEN_SALT', 'test-api-token-salt') },
  transfer: { token: { salt: env('TRANSFER_TOKEN_SALT', 'test-transfer-token-salt') } },
  secrets: { encryptionKey: env('ENCRYPTION_KEY', 'test-encryption-key-of-32-chars!') },
});
