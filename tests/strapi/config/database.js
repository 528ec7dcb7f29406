const path = require('path');

// Each harness run passes a fresh DATABASE_FILENAME so tests never see another run's data.
module.exports = ({ env }) => ({
  connection: {
    client: 'sqlite',
    connection: {
      filename: path.resolve(env('DATABASE_FILENAME', path.join(__dirname, '..', '.tmp', 'data.db'))),
    },
    useNullAsDefault: true,
  },
});
