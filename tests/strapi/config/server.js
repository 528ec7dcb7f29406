// The harness picks a free loopback port per run and passes it in PORT.
module.exports = ({ env }) => ({
  host: env('HOST', '127.0.0.1'),
  port: env.int('PORT', 1337),
  app: { keys: env.array('APP_KEYS', ['test-app-key-one', 'test-app-key-two']) },
  webhooks: { populateRelations: false },
});
